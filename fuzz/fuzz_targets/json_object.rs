#![no_main]
//! libFuzzer driver for `clarion_shards::fuzz::json_object`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| clarion_shards::fuzz::json_object(data));
