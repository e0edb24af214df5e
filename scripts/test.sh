#!/usr/bin/env bash
# Runs Clarion's whole test suite: unit tests of every crate, the integration tests under
# tests/ (real servers on 127.0.0.1, real fjall files, the APNs simulator over HTTP/2 + TLS),
# and the criterion benches compiled and run once in test mode.
set -euo pipefail
cd "$(dirname "$0")/.."
# glommio registers io_uring memory: raise the locked-memory limit as far as we may.
ulimit -l unlimited 2>/dev/null || ulimit -l "$(ulimit -H -l)" 2>/dev/null || true
cargo test --workspace --all-targets "$@"
