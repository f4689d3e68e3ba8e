//! Code-scoring kernels: the integer dot product of int8 codes and the Hamming distance of
//! bit codes. [`scalar`] is the reference every SIMD path is tested against; the dispatch
//! picks the best path for the CPU once (AVX-512 VNNI, AVX2, SIMD128 on wasm32).

pub mod scalar;
