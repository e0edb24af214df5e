#!/usr/bin/env bash
# Checks the running API against its OpenAPI description (docs/openapi.json) with schemathesis:
# starts `clarion serve --simulate` (every channel delivering to its built-in simulator on
# loopback) on a free 127.0.0.1 port with a fresh data directory and a bootstrap admin key,
# registers a few users and devices (the document's examples name them, so the GET, DELETE and
# notification calls find something), then runs every schemathesis check against it.
#
#   scripts/schemathesis.sh [extra schemathesis arguments...]
#
# Environment:
#   CLARION_BIN              the server binary (default target/release/clarion; not built here)
#   CLARION_OPENAPI          the document to check (default docs/openapi.json)
#   SCHEMATHESIS_MAX_EXAMPLES  test cases per operation and phase (default 100)
#   SCHEMATHESIS_SEED        the seed (default 20261207): the same seed, document and server
#                            give the same requests
#   SCHEMATHESIS_TIMEOUT     seconds the schemathesis run may take before it is killed
#                            (default 150; the whole script stays under 3 minutes)
#   SCHEMATHESIS_KEEP=1      keep the temporary directory (server log, reports) on exit
#
# Extra arguments go to `schemathesis run` as they are, e.g. to leave out operations the
# binary does not have yet:
#   scripts/schemathesis.sh --exclude-path-regex '^/(readyz|metrics|openapi\.json|v1/keys.*)$'
#
# Needs schemathesis on PATH (installs nothing itself). Written for and run with
# schemathesis 4.32.5, pinned in scripts/requirements-test.txt (pip install -r
# scripts/requirements-test.txt); the flags are schemathesis 4's (`--checks`, `--max-examples`,
# `--seed`, `--generation-*`, `--output-sanitize`), which 3.x spells differently
# (`--hypothesis-max-examples`, `--hypothesis-seed`, ...). scripts/schemathesis_hooks.py makes
# schema-valid requests meet the two rules JSON Schema cannot state (see there).
# Exits non-zero on any failure; the server is always stopped and nothing is left listening.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${CLARION_BIN:-target/release/clarion}
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-100}
SEED=${SCHEMATHESIS_SEED:-20261207}
ST_TIMEOUT=${SCHEMATHESIS_TIMEOUT:-150}
SPEC=${CLARION_OPENAPI:-docs/openapi.json}
PINNED=$(sed -n 's/^schemathesis==//p' scripts/requirements-test.txt 2>/dev/null || true)

if ! command -v schemathesis >/dev/null 2>&1; then
  echo "error: schemathesis is not on PATH; install it with:" >&2
  echo "  pip install -r scripts/requirements-test.txt   # schemathesis==${PINNED:-?}" >&2
  exit 2
fi
installed=$(schemathesis --version 2>/dev/null | awk '{print $NF}')
if [ -n "$PINNED" ] && [ "$installed" != "$PINNED" ]; then
  echo "warning: schemathesis $installed is installed, this script is written for $PINNED" >&2
fi
if [ ! -x "$BIN" ]; then
  echo "error: no server binary at $BIN (cargo build --release, or set CLARION_BIN)" >&2
  exit 2
fi
if [ ! -f "$SPEC" ]; then
  echo "error: no OpenAPI document at $SPEC" >&2
  exit 2
fi
SPEC=$(realpath "$SPEC")
for tool in curl python3 timeout realpath; do
  command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool is required" >&2; exit 2; }
done

started=$(date +%s)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/clarion-schemathesis.XXXXXX")
SERVER_PID=""

stop_server() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    # SIGTERM drains for the delivery grace period (shutdown_grace_ms, set short below).
    for _ in $(seq 1 100); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "server did not stop within 10 s of SIGTERM; killing it" >&2
      kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_server
  if [ "$rc" -ne 0 ] && [ -f "$WORK/server.log" ]; then
    echo "--- last lines of the server's log ($WORK/server.log) ---" >&2
    tail -n 20 "$WORK/server.log" >&2 || true
  fi
  if [ "${SCHEMATHESIS_KEEP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then
    echo "kept $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  echo "schemathesis.sh: exit $rc after $(( $(date +%s) - started )) s" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A free loopback port (a race with another process taking it is possible but harmless: the
# server then fails to bind and the script says so).
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
BASE="http://127.0.0.1:$PORT"
KEY="st-admin-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
AUTH="Authorization: Bearer $KEY"

# The bootstrap key is a configured one: admin, not revocable over the API.
cat >"$WORK/clarion.toml" <<EOF
listen = "127.0.0.1:$PORT"
data_dir = "$WORK/data"
shards = 2

[api]
keys = ["$KEY"]

[server]
drain_delay_ms = 0

[delivery]
shutdown_grace_ms = 500
EOF

# glommio's io_uring wants locked memory; raise the limit if we may (best effort).
ulimit -l unlimited 2>/dev/null || ulimit -l "$(ulimit -H -l)" 2>/dev/null || true
"$BIN" serve --config "$WORK/clarion.toml" --simulate >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

for _ in $(seq 1 300); do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "error: the server exited while starting" >&2
    exit 1
  fi
  if [ "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/healthz" || true)" = 200 ]; then
    break
  fi
  sleep 0.1
done
if [ "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/healthz" || true)" != 200 ]; then
  echo "error: the server did not answer /healthz with 200 within 30 s" >&2
  exit 1
fi
echo "server up on $BASE (pid $SERVER_PID, data in $WORK/data)"

# call METHOD PATH BODY EXPECTED...: one API call that must answer one of the EXPECTED codes.
call() {
  local method=$1 path=$2 body=$3
  shift 3
  local code
  code=$(curl -s -o "$WORK/answer" -w '%{http_code}' -X "$method" "$BASE$path" \
    -H "$AUTH" -H 'Content-Type: application/json' --data-binary "$body")
  for want in "$@"; do
    [ "$code" = "$want" ] && return 0
  done
  echo "error: setup call $method $path answered $code, expected $*: $(cat "$WORK/answer")" >&2
  exit 1
}

# The users and devices the document's examples name (docs/openapi.json: `alice` in paths,
# with the example iOS token; `bob`, with no device, in notification bodies, so that example
# notifications are accepted whatever their size for any channel).
IOS_TOKEN=4f0c9d3e2b1a59687766554433221100ffeeddccbbaa99887766554433221100
call PUT /v1/users/alice '{"email":"alice@example.com","phone":"+14155550123","locale":"en-US","timezone":"Europe/Paris"}' 201
call PUT /v1/users/bob '{}' 201
call POST /v1/users/alice/devices "{\"platform\":\"ios\",\"token\":\"$IOS_TOKEN\"}" 201
call POST /v1/users/alice/devices '{"platform":"android","token":"dGhpcyBpcyBmY20:APA91bH-x_Y"}' 201
# A browser subscription from the built-in Web Push simulator (its origin is in the log).
webpush_origin=$(sed -n 's/.*subscriptions from POST \(https:\/\/127\.0\.0\.1:[0-9]*\)\/subscribe.*/\1/p' \
  "$WORK/server.log" | head -n 1)
if [ -n "$webpush_origin" ]; then
  subscription=$(curl -sk -X POST "$webpush_origin/subscribe")
  call POST /v1/users/alice/devices "{\"platform\":\"web\",\"subscription\":$subscription}" 201
fi
call POST /v1/notifications '{"user_id":"alice","idempotency_key":"seed-1","title":"Hello","body":"From the schemathesis setup"}' 202
call PUT /v1/users/bob '{"locale":"fr-FR"}' 200

# The checks: all of them (--checks all, which includes positive_data_acceptance and
# negative_data_rejection: the document's schemas say exactly what the server takes, down to
# each field's pattern). Strings are drawn from ASCII (--generation-codec ascii): the server
# counts string limits in bytes of UTF-8, JSON Schema's maxLength counts characters, so a
# non-ASCII string at a limit would be valid for one and too long for the other.
# --output-sanitize false: the reproductions print bodies whole (tokens, idempotency keys);
# the key is this run's throwaway one. One worker: the run is bounded by examples and a hard
# timeout, and the machine is small.
export SCHEMATHESIS_HOOKS=${SCHEMATHESIS_HOOKS:-schemathesis_hooks}
export PYTHONPATH="$PWD/scripts${PYTHONPATH:+:$PYTHONPATH}"
# Run from the temporary directory: schemathesis keeps its replay cache in ./.schemathesis
# (kept with the rest when the run fails: `cd` there and `st replay <id>`).
cd "$WORK"
set +e
timeout --kill-after=10 "$ST_TIMEOUT" schemathesis run "$SPEC" \
  --url "$BASE" \
  --header "$AUTH" \
  --checks all \
  --max-examples "$MAX_EXAMPLES" \
  --seed "$SEED" \
  --generation-codec ascii \
  --generation-database none \
  --workers 1 \
  --request-timeout 10 \
  --no-color \
  --output-sanitize false \
  --report junit --report-dir "$WORK/report" \
  "$@"
rc=$?
set -e
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
  echo "error: schemathesis did not finish within ${ST_TIMEOUT} s" >&2
fi
# The server must have survived the run.
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  echo "error: the server died during the run" >&2
  rc=1
fi
exit "$rc"
