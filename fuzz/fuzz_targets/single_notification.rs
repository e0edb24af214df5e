#![no_main]
//! libFuzzer driver for `clarion::api::fuzz::single_notification`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| clarion::api::fuzz::single_notification(data));
