//! `cargo fuzz run recovery`: see `chainlog_fuzz::recovery`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| chainlog_fuzz::recovery::run(data));
