//! cargo-fuzz target `ops`: see `srvdb_fuzz::ops` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| srvdb_fuzz::ops(data));
