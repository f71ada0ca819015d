//! `cargo fuzz run decode`: see `chainlog_fuzz::decode`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| chainlog_fuzz::decode::run(data));
