#!/usr/bin/env bash
# The single-request path's regression benchmark (issue 15): the same load as single requests
# over HTTP/1.1 keep-alive connections and as batches of 100 over h2c, one after the other in
# the same session, and the server's CPU per notification of each and their ratio (the goal is
# at most 1.5). Prints one line per run and the ratio; exits 1 when MAX_RATIO is set and passed.
#
#   scripts/bench_single.sh [RATE] [CONNECTIONS]     (default 10000 64; about 1 minute)
#
# Needs target/release/{clarion,clarion-loadtest} (cargo build --release --workspace --bins).
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-10000}
CONNECTIONS=${2:-64}
OUT=$(mktemp -d /tmp/clarion-bench-single.XXXXXX)
ulimit -l unlimited 2>/dev/null || ulimit -l "$(ulimit -H -l)" 2>/dev/null || true
run() {
  local name=$1; shift
  timeout 300 ./target/release/clarion-loadtest bench --server-bin target/release/clarion \
    --rate "$RATE" --warmup 2s --duration 15s --users 20000 --drain-timeout 60s \
    --out "$OUT/$name" "$@" >"$OUT/$name.txt" 2>&1 || { cat "$OUT/$name.txt"; exit 2; }
  python3 - "$OUT/$name/summary.json" "$name" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
cpu = s["cpu"]["server_us_per_notification"]
p = s.get("fsync_probe") or {}
print(f"{sys.argv[2]:>7}: {s['achieved_rate']:.0f}/s accepted, server {cpu:.1f} us/notification, "
      f"probe {'calm' if p.get('calm') else 'NOT calm'} (max fsync {p.get('max_us', 0) / 1000:.1f} ms)")
open(sys.argv[1] + ".cpu", "w").write(str(cpu))
PY
}
run single --batch 1 --protocol h1 --connections "$CONNECTIONS"
run batch --batch 100
python3 - "$OUT" "${MAX_RATIO:-}" <<'PY'
import sys
single = float(open(f"{sys.argv[1]}/single/summary.json.cpu").read())
batch = float(open(f"{sys.argv[1]}/batch/summary.json.cpu").read())
ratio = single / batch
print(f"  ratio: {ratio:.2f} (single {single:.1f} / batch {batch:.1f} us per notification); reports in {sys.argv[1]}")
if sys.argv[2] and ratio > float(sys.argv[2]):
    print(f"  over MAX_RATIO {sys.argv[2]}")
    sys.exit(1)
PY
