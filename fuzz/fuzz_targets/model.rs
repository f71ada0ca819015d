//! `cargo fuzz run model`: see `chainlog_fuzz::model`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| chainlog_fuzz::model::run(data));
