#!/usr/bin/env bash
# The main job on a fresh machine: build, start `clarion serve` with embedded fjall storage and
# the built-in APNs simulator (`--simulate`: no credentials needed), drive a short open-loop load through it,
# print the load-test summary (throughput, HDR latency percentiles, the delivery ledger), stop.
#
#   ./scripts/demo.sh [RATE=5000] [DURATION=10s] [SHARDS=all cores]
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-5000}
DURATION=${2:-10s}
SHARDS=${3:-$(nproc)}
ulimit -l unlimited 2>/dev/null || ulimit -l "$(ulimit -H -l)" 2>/dev/null || true
cargo build --release --bins --workspace
DATA=$(mktemp -d /tmp/clarion-demo.XXXXXX)
KEY=demo-key-0123456789abcdef
PORT=${CLARION_DEMO_PORT:-18080}
CONTROL=${CLARION_DEMO_CONTROL:-18091}
cat > "$DATA/clarion.toml" <<TOML
listen = "127.0.0.1:$PORT"
data_dir = "$DATA/data"
shards = $SHARDS
[api]
keys = ["$KEY"]
[simulator]
control_listen = "127.0.0.1:$CONTROL"
TOML
echo "== starting clarion (data in $DATA/data, built-in APNs simulator)"
./target/release/clarion serve --simulate --config "$DATA/clarion.toml" 2> "$DATA/server.log" &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done
echo "== load: $RATE notifications/s for $DURATION"
./target/release/clarion-loadtest run --target "127.0.0.1:$PORT" --api-key "$KEY" \
  --sim-control "127.0.0.1:$CONTROL" --rate "$RATE" --duration "$DURATION" \
  --users 10000 --batch 1 --protocol h2 --fsync-probe-dir "$DATA" --out "$DATA/report"
echo "== percentile files and summary.json in $DATA/report; server log in $DATA/server.log"
