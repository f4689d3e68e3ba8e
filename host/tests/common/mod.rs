//! Helpers shared by the host's integration tests.
#![allow(dead_code)]

use srvdb_host::sandbox::SandboxConfig;

/// The default sandbox configuration, with a clear failure when the component is not built.
pub fn component_config() -> SandboxConfig {
    let c = SandboxConfig::new();
    assert!(
        c.component.exists(),
        "component {} missing: run `make component` first (make test does)",
        c.component.display()
    );
    c
}

/// The `k` best rows of `data` (rows of `dim`) for `query` among those `allowed` lets through,
/// by brute force in f64 ([`srvdb::testing::reference_key`]): (row, score as the engine reports
/// it), best first, ties to the lower row.
pub fn brute_force(
    metric: srvdb::Metric,
    data: &[f32],
    dim: usize,
    query: &[f32],
    k: usize,
    allowed: impl Fn(usize) -> bool,
) -> Vec<(usize, f64)> {
    let mut scored: Vec<(usize, f64)> = data
        .chunks_exact(dim)
        .enumerate()
        .filter(|(row, _)| allowed(*row))
        .map(|(row, v)| (row, srvdb::testing::reference_key(metric, query, v)))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.truncate(k);
    let higher = metric.higher_is_better();
    scored
        .into_iter()
        .map(|(row, key)| (row, if higher { key } else { -key }))
        .collect()
}
