//! Test helpers of the harness's integration tests: the simulator helpers the simulators' own
//! tests use (`sim/tests/common`: a simulator with a fresh key, an HTTP/2-over-TLS client that
//! trusts it, request builders), and a fake Clarion API (`fake_api`).
#![allow(dead_code)]

pub mod fake_api;

#[path = "../../../sim/tests/common/mod.rs"]
mod sim_common;

#[allow(unused_imports)]
pub use sim_common::*;
