#![no_main]
//! libFuzzer driver for `clarion::api::fuzz::device`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| clarion::api::fuzz::device(data));
