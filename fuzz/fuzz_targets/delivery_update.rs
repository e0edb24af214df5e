#![no_main]
//! libFuzzer driver for `clarion_shards::fuzz::delivery_update`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| clarion_shards::fuzz::delivery_update(data));
