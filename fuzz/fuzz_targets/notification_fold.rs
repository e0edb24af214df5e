#![no_main]
//! libFuzzer driver for `clarion_shards::fuzz::notification_fold`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| clarion_shards::fuzz::notification_fold(data));
