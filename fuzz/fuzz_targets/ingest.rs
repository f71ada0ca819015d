//! `cargo fuzz run ingest`: see `chainlog_fuzz::ingest`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| chainlog_fuzz::ingest::run(data));
