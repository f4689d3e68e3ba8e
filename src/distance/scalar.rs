//! Reference kernels: plain loops accumulated in f64. Every faster kernel is tested against
//! these; they are also the fallback for very short vectors.

/// Inner product of two equal-length slices.
pub fn dot_f32_scalar(a: &[f32], b: &[f32]) -> f32 {
    let mut sum = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        sum += f64::from(*x) * f64::from(*y);
    }
    sum as f32
}

/// Squared Euclidean distance of two equal-length slices.
pub fn l2sq_f32_scalar(a: &[f32], b: &[f32]) -> f32 {
    let mut sum = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        let d = f64::from(*x) - f64::from(*y);
        sum += d * d;
    }
    sum as f32
}
