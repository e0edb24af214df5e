#!/usr/bin/env bash
# Runs Clarion's whole test suite: unit tests of every crate, the integration tests under
# tests/ (real servers on 127.0.0.1, real fjall files, the provider simulators over HTTP/2 +
# TLS, promtool on /metrics), the criterion benches compiled and run once in test mode; then,
# against the release binaries, the API contract (scripts/schemathesis.sh: schemathesis on
# docs/openapi.json) and a rolling restart behind HAProxy under load
# (scripts/rolling_restart.sh). Release builds: the rolling restart's load needs them, and
# the tests run faster for it. Arguments go to `cargo test` (and skip the two scripts).
set -euo pipefail
cd "$(dirname "$0")/.."
# glommio registers io_uring memory: raise the locked-memory limit as far as we may.
ulimit -l unlimited 2>/dev/null || ulimit -l "$(ulimit -H -l)" 2>/dev/null || true
cargo test --release --workspace --all-targets "$@"
if [ "$#" -eq 0 ]; then
  # target/release/{clarion,clarion-loadtest}: the test build made both (the integration tests
  # run them); a separate `cargo build` would build the dependencies again with other features.
  bash scripts/schemathesis.sh
  bash scripts/rolling_restart.sh
fi
