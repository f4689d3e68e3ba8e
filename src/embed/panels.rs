//! What the packed product kernels (`matmul_avx512.rs`, `matmul_avx2.rs`) share: a weight packed
//! once into panels of columns, and the split of a product's rows into blocks over rayon. The
//! kernels differ only in their registers (the panel width, the rows per tile, the block).

/// A `k x n` weight (`W` of `x · W`) packed into panels of `nr` columns: for every `k`, the
/// panel's `nr` weights side by side, zero past the last column; the data starts on a
/// boundary of `nr / 2` floats (one vector), so a kernel loads it aligned.
pub(super) struct PanelWeight {
    buf: Vec<f32>,
    start: usize,
    nr: usize,
    /// Values per output column.
    pub k: usize,
    /// Output columns.
    pub n: usize,
}

impl PanelWeight {
    /// Packs `weight`, `n` rows of `k` (PyTorch's `[out, in]`: row `j` holds the weights of
    /// output column `j`); `None` when the shape does not match.
    pub fn new(weight: &[f32], n: usize, k: usize, nr: usize) -> Option<Self> {
        if n == 0 || k == 0 || nr < 2 || n.checked_mul(k) != Some(weight.len()) {
            return None;
        }
        let lanes = nr / 2;
        let len = n.div_ceil(nr).checked_mul(k)?.checked_mul(nr)?;
        // Slack of one vector less a float, so that the data can start on its boundary.
        let mut buf = vec![0.0f32; len.checked_add(lanes - 1)?];
        let misalign = (buf.as_ptr() as usize % (lanes * 4)) / 4;
        let start = (lanes - misalign) % lanes;
        let data = &mut buf[start..start + len];
        for (j, row) in weight.chunks_exact(k).enumerate() {
            let (p, c) = (j / nr, j % nr);
            let panel = &mut data[p * k * nr..(p + 1) * k * nr];
            for (kk, &w) in row.iter().enumerate() {
                panel[kk * nr + c] = w;
            }
        }
        Some(PanelWeight {
            buf,
            start,
            nr,
            k,
            n,
        })
    }

    /// The panels: `n.div_ceil(nr) * k * nr` floats from a vector boundary.
    pub fn data(&self) -> &[f32] {
        let len = self.n.div_ceil(self.nr) * self.k * self.nr;
        &self.buf[self.start..self.start + len]
    }

    /// Runs `block(out, a, rows)` over blocks of whole tiles of `mr` rows of `out (m x n)` and
    /// `a (m x k)`, on rayon's threads when there are several blocks: at least two blocks per
    /// thread when there are that many tiles, and at most `max_tiles` tiles a block (so that a
    /// block's slice of `a` stays in L2). Each block gets its own rows of `out`.
    pub fn for_row_blocks(
        &self,
        out: &mut [f32],
        a: &[f32],
        m: usize,
        mr: usize,
        max_tiles: usize,
        block: impl Fn(&mut [f32], &[f32], usize) + Sync + Send,
    ) -> Result<(), String> {
        let (k, n) = (self.k, self.n);
        if m.checked_mul(n) != Some(out.len()) || m.checked_mul(k) != Some(a.len()) {
            return Err("matrix product of mismatched shapes".into());
        }
        if m == 0 {
            return Ok(());
        }
        let threads = rayon::current_num_threads().max(1);
        let tiles = m.div_ceil(mr);
        let per_block = tiles.div_ceil(2 * threads).clamp(1, max_tiles) * mr;
        let work = |(i, out): (usize, &mut [f32])| {
            let r0 = i * per_block;
            let rows = out.len() / n;
            block(out, &a[r0 * k..(r0 + rows) * k], rows);
        };
        if tiles * mr > per_block {
            use rayon::prelude::*;
            out.par_chunks_mut(per_block * n).enumerate().for_each(work);
        } else {
            work((0, out));
        }
        Ok(())
    }
}
