//! cargo-fuzz target `open_metadata`: see `srvdb_fuzz::open_metadata` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| srvdb_fuzz::open_metadata(data));
