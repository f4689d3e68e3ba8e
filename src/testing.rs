//! Helpers for the tests, benches and examples of this workspace (cargo feature `testing`): the
//! one seeded random generator they all draw data from, and the seed they share.

/// The seed tests draw from: `SRVDB_SEED` if set to a number, else a fixed default. Tests
/// print it in their failure messages, so a failing run can be replayed.
pub fn seed() -> u64 {
    std::env::var("SRVDB_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_2026)
}

/// SplitMix64 (Steele, Lea and Flood, 2014): tiny, seeded, and independent of the code under
/// test. Not for anything that needs unpredictability.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose stream is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[-1, 1)`, from 24 random bits (exact in f32).
    pub fn f32(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// Uniform in `(0, 1]`, from 53 random bits (never 0, so its logarithm is finite).
    pub fn unit_f64(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// In `0..n` (0 when `n` is 0), by modulo: a bias under 2^-40 for the small `n` tests use.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Standard normal, by Box-Muller.
    pub fn normal(&mut self) -> f32 {
        let (u, v) = (self.unit_f64(), self.unit_f64());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }

    /// `n` vectors of `dim` components, each uniform in `[-1, 1)` (see [`Rng::f32`]).
    pub fn vectors(&mut self, n: usize, dim: usize) -> Vec<f32> {
        (0..n * dim).map(|_| self.f32()).collect()
    }

    /// `n` vectors of `dim` components, uniform in the cube then scaled to unit length.
    pub fn unit_vectors(&mut self, n: usize, dim: usize) -> Vec<f32> {
        let mut out = self.vectors(n, dim);
        for v in out.chunks_mut(dim.max(1)) {
            let norm = v
                .iter()
                .map(|x| x * x)
                .sum::<f32>()
                .sqrt()
                .max(f32::MIN_POSITIVE);
            v.iter_mut().for_each(|x| *x /= norm);
        }
        out
    }
}

/// The ranking key of `v` for query `q` in f64 (higher is better: L2 is negated), the
/// reference the unit tests check the engine's f32 kernels and indexes against.
pub fn reference_key(metric: crate::types::Metric, q: &[f32], v: &[f32]) -> f64 {
    use crate::types::Metric;
    let dot: f64 = q
        .iter()
        .zip(v)
        .map(|(a, b)| f64::from(*a) * f64::from(*b))
        .sum();
    match metric {
        Metric::Dot => dot,
        Metric::Cosine => {
            let nq = q.iter().map(|a| f64::from(*a).powi(2)).sum::<f64>().sqrt();
            let nv = v.iter().map(|a| f64::from(*a).powi(2)).sum::<f64>().sqrt();
            dot / (nq * nv)
        }
        Metric::L2 => -q
            .iter()
            .zip(v)
            .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
            .sum::<f64>(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stream is SplitMix64's: the first outputs for seed 0 from the reference C code, so
    /// data seeded before this module existed stays the same.
    #[test]
    fn the_stream_is_splitmix64() {
        let mut rng = Rng::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        let mut rng = Rng::new(7);
        let x: Vec<f32> = (0..1000).map(|_| rng.f32()).collect();
        assert!(x.iter().all(|v| (-1.0..1.0).contains(v)));
        assert!(Rng::new(7)
            .unit_vectors(3, 5)
            .chunks(5)
            .all(|v| { (v.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5 }));
    }
}
