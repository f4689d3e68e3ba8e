//! cargo-fuzz target `open_vectors`: see `srvdb_fuzz::open_vectors` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| srvdb_fuzz::open_vectors(data));
