#![no_main]
//! libFuzzer driver for `clarion::api::fuzz::user_profile`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| clarion::api::fuzz::user_profile(data));
