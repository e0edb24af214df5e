#![no_main]
//! libFuzzer driver for `clarion_shards::fuzz::user_record`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| clarion_shards::fuzz::user_record(data));
