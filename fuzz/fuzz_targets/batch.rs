#![no_main]
//! libFuzzer driver for `clarion::api::fuzz::batch`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| clarion::api::fuzz::batch(data));
