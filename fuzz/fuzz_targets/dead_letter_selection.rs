#![no_main]
//! libFuzzer driver for `clarion::api::fuzz::dead_letter_selection`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| clarion::api::fuzz::dead_letter_selection(data));
