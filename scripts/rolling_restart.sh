#!/usr/bin/env bash
# A rolling restart of two Clarion instances behind HAProxy, under load, must lose nothing.
#
# What the script does:
#   1. Starts one APNs simulator (clarion-loadtest apns-sim) and two Clarion instances, A and B,
#      on 127.0.0.1. Each has its own data directory and SHARDS shards, and both deliver to the
#      simulator. It then starts HAProxy (the system's haproxy binary) in front of them, with
#      a config built from deploy/haproxy.cfg.
#   2. Registers the same users and devices on both instances directly. Each instance has its
#      own data, and a notification may go to either one.
#   3. Drives two loads through HAProxy at once. One sends single requests (--batch 1,
#      HTTP/1.1); the other sends batches (--batch $BATCH, h2c). They use distinct users and
#      seq ranges.
#   4. Meanwhile it restarts A and then B. Each restart: SIGTERM, wait for the exit (code 0),
#      start again on the same data directory, then wait until READY_PATH answers 200 and
#      HAProxy's stats show the server UP.
#   5. Passes only if every request got a 2xx and every notification got a 202, and the
#      simulator received each accepted notification exactly once: 0 lost, 0 duplicated,
#      0 unexpected. That is checked per load run by clarion-loadtest, and over the whole ledger
#      by this script.
#
# Usage:   scripts/rolling_restart.sh            (exit 0: passed; 1: failed; 2: could not run)
# Knobs (environment): READY_PATH=/readyz (set /healthz for a server without /readyz),
#   SINGLE_RATE=500 BATCH_RATE=2000 BATCH=100 LOAD_SECONDS=45 USERS=1000 SHARDS=2
#   DRAIN_DELAY_MS=5000 SHUTDOWN_GRACE_MS=5000 FIRST_RESTART_AFTER=5 RESTART_GAP=3
#   MAX_SECONDS=160 (then the run is stopped and cleaned up), KEEP=1 (keep the work directory;
#   it is always kept after a failure), WORK=DIR, CLARION=... LOADTEST=... HAPROXY=...
#   HAPROXY_CFG_SRC=...
# Needs: target/release/{clarion,clarion-loadtest} built, haproxy (apt-get install -y
# haproxy), curl, jq, ss, timeout. Everything listens on 127.0.0.1 only. The load is bounded
# in count and time, the whole run is stopped after MAX_SECONDS, and a trap stops every
# process the script started (by pid) and checks that none of its ports is still listening.
set -euo pipefail

# The whole run is bounded: past MAX_SECONDS `timeout` sends SIGTERM to this script, whose trap
# stops everything it started; 15 s later SIGKILL.
if [[ -z ${ROLLING_RESTART_TIMED:-} ]]; then
  ROLLING_RESTART_TIMED=1 exec timeout --foreground -k 15 "${MAX_SECONDS:-160}" "$BASH" "$0" "$@"
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CLARION=${CLARION:-$ROOT/target/release/clarion}
LOADTEST=${LOADTEST:-$ROOT/target/release/clarion-loadtest}
HAPROXY=${HAPROXY:-$(command -v haproxy || echo /usr/sbin/haproxy)}
HAPROXY_CFG_SRC=${HAPROXY_CFG_SRC:-$ROOT/deploy/haproxy.cfg}
READY_PATH=${READY_PATH:-/readyz}
SHARDS=${SHARDS:-2}
USERS=${USERS:-1000}
SINGLE_RATE=${SINGLE_RATE:-500}
BATCH_RATE=${BATCH_RATE:-2000}
BATCH=${BATCH:-100}
LOAD_SECONDS=${LOAD_SECONDS:-45}
FIRST_RESTART_AFTER=${FIRST_RESTART_AFTER:-5}
RESTART_GAP=${RESTART_GAP:-3}
DRAIN_DELAY_MS=${DRAIN_DELAY_MS:-5000}
SHUTDOWN_GRACE_MS=${SHUTDOWN_GRACE_MS:-5000}
MAX_SECONDS=${MAX_SECONDS:-160}
KEEP=${KEEP:-0}
# The longest a stop may take: the drain delay, the shutdown grace, the connections' drain
# (5 s) and the final commit, with room to spare.
STOP_TIMEOUT_S=$(( (DRAIN_DELAY_MS + SHUTDOWN_GRACE_MS) / 1000 + 15 ))
START_TIMEOUT_S=30

now_ms() { date +%s%3N; }
T0=$(now_ms)
log() {
  local ms=$(( $(now_ms) - T0 ))
  printf '[%4d.%01ds] %s\n' $((ms / 1000)) $(((ms % 1000) / 100)) "$*"
}
FAILURES=()
fail() { FAILURES+=("$*"); log "FAIL: $*"; }
die() { log "cannot run: $*"; exit 2; }

for tool in curl jq ss timeout; do
  command -v "$tool" >/dev/null || die "$tool is missing"
done
[[ -x $CLARION && -x $LOADTEST ]] || die "build first: cargo build --release --bins --workspace"
[[ -x $HAPROXY ]] || die "haproxy is missing: apt-get install -y haproxy"
[[ -f $HAPROXY_CFG_SRC ]] || die "$HAPROXY_CFG_SRC is missing"

WORK=${WORK:-$(mktemp -d /tmp/clarion-rolling.XXXXXX)}
mkdir -p "$WORK"
declare -A PID=() PORT=()
LOAD_PIDS=()
ALL_PORTS=()

# ---- cleanup: every process we started, by pid; nothing left listening ---------------------
stop_pids() { # seconds to wait after SIGTERM before SIGKILL, pids...
  local wait_s=$1 p i alive; shift
  (( $# > 0 )) || return 0
  for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
  for ((i = 0; i < wait_s * 10; i++)); do
    alive=0
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
    (( alive )) || break
    sleep 0.1
  done
  for p in "$@"; do
    if kill -0 "$p" 2>/dev/null; then
      log "pid $p did not stop within ${wait_s}s of SIGTERM: SIGKILL"
      kill -KILL "$p" 2>/dev/null || true
    fi
    wait "$p" 2>/dev/null || true
  done
}
cleanup() {
  local rc=$? p left pids=()
  trap - EXIT INT TERM
  stop_pids 5 "${LOAD_PIDS[@]}"
  for p in haproxy a b; do [[ -n ${PID[$p]:-} ]] && pids+=("${PID[$p]}"); done
  stop_pids "$STOP_TIMEOUT_S" "${pids[@]}"
  [[ -n ${PID[sim]:-} ]] && stop_pids 5 "${PID[sim]}"
  left=""
  for p in "${ALL_PORTS[@]}"; do
    if ss -Hltn "sport = :$p" 2>/dev/null | grep -q .; then left+=" $p"; fi
  done
  if [[ -n $left ]]; then
    log "still listening on port(s)$left"
    [[ $rc == 0 ]] && rc=1
  fi
  if [[ $KEEP == 1 || $rc != 0 ]]; then
    log "work directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "stopped by SIGTERM (the ${MAX_SECONDS}s limit?)"; exit 124' TERM

# ---- ports: free ones on loopback, distinct --------------------------------------------------
# Below the ephemeral range, so that no outgoing connection holds the port.
EPHEMERAL_LOW=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
(( EPHEMERAL_LOW > 12000 )) || EPHEMERAL_LOW=61000
pick_port() {
  local p
  while :; do
    p=$(( 10000 + RANDOM % (EPHEMERAL_LOW - 10000) ))
    [[ " ${ALL_PORTS[*]} " == *" $p "* ]] && continue
    ss -Hltn "sport = :$p" | grep -q . && continue
    echo "$p"
    return
  done
}
for name in sim simctl a b lb stats; do PORT[$name]=$(pick_port); ALL_PORTS+=("${PORT[$name]}"); done

http_code() { # url -> status code, 000 when no answer
  curl -s -o /dev/null -m 1 -w '%{http_code}' "$1" 2>/dev/null || true
}
wait_for() { # seconds, description, command...
  local secs=$1 what=$2; shift 2
  local deadline=$(( $(now_ms) + secs * 1000 ))
  until "$@"; do
    (( $(now_ms) < deadline )) || { fail "$what: not within ${secs}s"; return 1; }
    sleep 0.1
  done
}

# ---- the APNs simulator ------------------------------------------------------------------------
ulimit -l unlimited 2>/dev/null || ulimit -l "$(ulimit -H -l)" 2>/dev/null ||
  log "warning: cannot raise the locked-memory limit (glommio's io_uring needs it)"
ulimit -n "$(ulimit -H -n)" 2>/dev/null || true
log "work directory $WORK; $("$CLARION" --version) ($(date -r "$CLARION" '+built %F %T'))"
"$LOADTEST" keygen --out "$WORK/keys" >/dev/null
"$LOADTEST" apns-sim --listen "127.0.0.1:${PORT[sim]}" --control "127.0.0.1:${PORT[simctl]}" \
  --key-file "$WORK/keys/apns-key.p8" --ca-out "$WORK/apns-ca.pem" --threads 1 \
  >"$WORK/sim.log" 2>&1 &
PID[sim]=$!
sim_up() { [[ -s $WORK/apns-ca.pem && $(http_code "http://127.0.0.1:${PORT[simctl]}/stats") == 200 ]]; }
wait_for 10 "APNs simulator" sim_up || exit 1
log "APNs simulator on 127.0.0.1:${PORT[sim]}, control on 127.0.0.1:${PORT[simctl]}"

# ---- the two Clarion instances -----------------------------------------------------------------
API_KEY="rolling-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
write_config() { # name, with_server_section(0|1)
  local name=$1 with_server=$2
  cat >"$WORK/$name.toml" <<TOML
listen = "127.0.0.1:${PORT[$name]}"
data_dir = "$WORK/$name/data"
shards = $SHARDS

[api]
keys = ["$API_KEY"]

[storage]
fsync = true

[delivery]
shutdown_grace_ms = $SHUTDOWN_GRACE_MS

[apns]
endpoint = "https://127.0.0.1:${PORT[sim]}"
team_id = "TEAMLOAD01"
key_id = "KEYLOAD001"
key_file = "$WORK/keys/apns-key.p8"
topic = "com.clarion.loadtest"
connections = 2
ca_file = "$WORK/apns-ca.pem"
TOML
  if [[ $with_server == 1 ]]; then
    printf '\n[server]\ndrain_delay_ms = %s\n' "$DRAIN_DELAY_MS" >>"$WORK/$name.toml"
  fi
}
# A server without the drain ([server] drain_delay_ms) refuses the unknown section: run without.
DRAIN_SUPPORTED=1
write_config a 1
if ! "$CLARION" check-config --config "$WORK/a.toml" >"$WORK/check-config.log" 2>&1; then
  if grep -q "server" "$WORK/check-config.log"; then
    DRAIN_SUPPORTED=0
    log "this clarion has no [server] drain_delay_ms: running without it (SIGTERM closes the listeners at once)"
  else
    cat "$WORK/check-config.log"
    die "the server config does not validate"
  fi
fi
write_config a "$DRAIN_SUPPORTED"
write_config b "$DRAIN_SUPPORTED"
"$CLARION" check-config --config "$WORK/b.toml" >"$WORK/check-config.log" 2>&1 ||
  { cat "$WORK/check-config.log"; die "the server config does not validate"; }

start_server() { # name
  local name=$1
  mkdir -p "$WORK/$name"
  echo "==== start $(date +%T.%3N)" >>"$WORK/$name.log"
  "$CLARION" serve --config "$WORK/$name.toml" >>"$WORK/$name.log" 2>&1 &
  PID[$name]=$!
}
ready() { [[ $(http_code "http://127.0.0.1:${PORT[$1]}$READY_PATH") == 200 ]]; }
alive_and_ready() { kill -0 "${PID[$1]}" 2>/dev/null || { fail "server $1 exited at start (see $WORK/$1.log)"; exit 1; }; ready "$1"; }
start_server a
start_server b
wait_for "$START_TIMEOUT_S" "server a ready" alive_and_ready a || exit 1
wait_for "$START_TIMEOUT_S" "server b ready" alive_and_ready b || exit 1
log "clarion a on 127.0.0.1:${PORT[a]}, b on 127.0.0.1:${PORT[b]} ($SHARDS shards each, $READY_PATH 200)"

# ---- HAProxy, configured from deploy/haproxy.cfg ------------------------------------------------
# Rewritten: the global lines that need a daemon, root or /run (chroot, user, group, daemon, the
# syslog target, the stats socket), the bind addresses, the servers (the first two become a and
# b; any more are dropped) and the health-check path. Everything else is used as written:
# timeouts, retry-on, redispatch, checks, http-reuse.
awk -v sock="$WORK/haproxy.sock" -v lb="${PORT[lb]}" -v st="${PORT[stats]}" \
    -v pa="${PORT[a]}" -v pb="${PORT[b]}" -v rp="$READY_PATH" '
  /^[a-z]/ { section = $1 " " $2; sub(/ $/, "", section); servers = 0; binds = 0 }
  /^[[:space:]]*(#|$)/ { print; next }
  section == "global" && $1 ~ /^(chroot|user|group|daemon)$/ { next }
  section == "global" && $1 == "log" { print "    log stdout format raw local0 info"; next }
  section == "global" && $1 == "stats" && $2 == "socket" {
    print "    stats socket " sock " mode 600 level admin"; next }
  section == "frontend clarion_api" && $1 == "bind" { if (binds++ == 0) print "    bind 127.0.0.1:" lb; next }
  section == "frontend stats" && $1 == "bind" { print "    bind 127.0.0.1:" st; next }
  $1 == "server" {
    servers++
    if (servers == 1) { $2 = "clarion-a"; $3 = "127.0.0.1:" pa; print "    " $0 }
    else if (servers == 2) { $2 = "clarion-b"; $3 = "127.0.0.1:" pb; print "    " $0 }
    next
  }
  $1 == "option" && $2 == "httpchk" { print "    option httpchk GET " rp; next }
  { print }
' "$HAPROXY_CFG_SRC" >"$WORK/haproxy.cfg"
# The settings this test relies on must have come through.
for want in "retry-on " "option redispatch" "option httpchk GET $READY_PATH" \
            "http-check expect status 200" "inter 1s fall 2 rise 2" \
            "server clarion-a 127.0.0.1:${PORT[a]}" "server clarion-b 127.0.0.1:${PORT[b]}" \
            "bind 127.0.0.1:${PORT[lb]}" "bind 127.0.0.1:${PORT[stats]}"; do
  grep -qF -- "$want" "$WORK/haproxy.cfg" || die "derived haproxy.cfg lacks '$want'"
done
"$HAPROXY" -c -q -f "$WORK/haproxy.cfg" >"$WORK/haproxy-check.log" 2>&1 ||
  { cat "$WORK/haproxy-check.log"; die "the derived haproxy.cfg does not validate"; }
"$HAPROXY" -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
PID[haproxy]=$!

lb_status() { # server name -> its status in HAProxy's stats CSV (UP, DOWN, UP 1/2, ...)
  curl -s -m 1 "http://127.0.0.1:${PORT[stats]}/stats;csv" 2>/dev/null |
    awk -F, -v s="clarion-$1" '$1 == "clarion" && $2 == s { print $18 }' || true
}
lb_up() { [[ $(lb_status "$1") == "UP" ]]; }
wait_for 10 "HAProxy sees a UP" lb_up a || exit 1
wait_for 10 "HAProxy sees b UP" lb_up b || exit 1
log "HAProxy ($("$HAPROXY" -v | head -1 | awk '{print $3}')) on 127.0.0.1:${PORT[lb]}, stats on http://127.0.0.1:${PORT[stats]}/stats"

# ---- users and devices on both instances -------------------------------------------------------
# `run` registers its users (<prefix>0..N-1, one iOS device each, tokens derived from the
# prefix), then sends a few notifications of its own at seqs far from the loads' ranges.
SINGLE_PREFIX=rrs SINGLE_SEQ=0
BATCH_PREFIX=rrb BATCH_SEQ=100000000
common=(--api-key "$API_KEY" --sim-control "127.0.0.1:${PORT[simctl]}" --no-reset-sim --users "$USERS")
reg_pids=() reg_names=() reg_seq=900000000
for name in a b; do
  for prefix in $SINGLE_PREFIX $BATCH_PREFIX; do
    timeout -k 5 60 "$LOADTEST" run --target "127.0.0.1:${PORT[$name]}" "${common[@]}" \
      --user-prefix "$prefix" --seq-start "$reg_seq" --rate 20 --duration 1s --batch 1 \
      --protocol h1 --connections 16 --drain-timeout 15s --out "$WORK/reg-$name-$prefix" \
      >"$WORK/reg-$name-$prefix.txt" 2>&1 &
    reg_pids+=($!) reg_names+=("$name-$prefix")
    reg_seq=$((reg_seq + 1000))
  done
done
for i in "${!reg_pids[@]}"; do
  rc=0; wait "${reg_pids[$i]}" || rc=$?
  s="$WORK/reg-${reg_names[$i]}/summary.json"
  if [[ $rc != 0 || ! -f $s ]] || [[ $(jq '.ledger.lost + .ledger.duplicated + .ledger.unexpected' "$s") != 0 ]]; then
    tail -5 "$WORK/reg-${reg_names[$i]}.txt" >&2 || true
    fail "registration ${reg_names[$i]} (exit $rc)"
  fi
done
(( ${#FAILURES[@]} == 0 )) || exit 1
log "registered $USERS users x 2 prefixes on both instances"

# ---- the load through HAProxy ------------------------------------------------------------------
LOAD_TIMEOUT_S=$(( LOAD_SECONDS + 75 ))
timeout -k 5 "$LOAD_TIMEOUT_S" "$LOADTEST" run --target "127.0.0.1:${PORT[lb]}" "${common[@]}" \
  --no-register --user-prefix "$SINGLE_PREFIX" --seq-start "$SINGLE_SEQ" \
  --batch 1 --protocol h1 --connections 32 --rate "$SINGLE_RATE" --duration "${LOAD_SECONDS}s" \
  --drain-timeout 40s --out "$WORK/load-single" >"$WORK/load-single.txt" 2>&1 &
LOAD_PIDS+=($!)
timeout -k 5 "$LOAD_TIMEOUT_S" "$LOADTEST" run --target "127.0.0.1:${PORT[lb]}" "${common[@]}" \
  --no-register --user-prefix "$BATCH_PREFIX" --seq-start "$BATCH_SEQ" \
  --batch "$BATCH" --protocol h2 --connections 4 --rate "$BATCH_RATE" --duration "${LOAD_SECONDS}s" \
  --drain-timeout 40s --out "$WORK/load-batch" >"$WORK/load-batch.txt" 2>&1 &
LOAD_PIDS+=($!)
log "load: $SINGLE_RATE/s single (h1) + $BATCH_RATE/s in batches of $BATCH (h2c) for ${LOAD_SECONDS}s through HAProxy"

# ---- the rolling restart -----------------------------------------------------------------------
snapshot_stats() { # name, tag: the instance's /v1/stats (its counters since it started)
  curl -s -m 2 -H "Authorization: Bearer $API_KEY" "http://127.0.0.1:${PORT[$1]}/v1/stats" \
    >"$WORK/stats-$1-$2.json" 2>/dev/null || true
}
declare -A R=()   # per restart: rc, drain (SIGTERM -> exit), notready, lbdown, ready, lbup (ms)
restart() { # name
  local name=$1 pid=${PID[$1]} t_term t_start now code st rc deadline
  snapshot_stats "$name" first-life
  log "restart $name: SIGTERM to pid $pid"
  R[$name.notready]=- R[$name.lbdown]=- R[$name.ready]=- R[$name.lbup]=-
  t_term=$(now_ms)
  kill -TERM "$pid"
  deadline=$(( t_term + STOP_TIMEOUT_S * 1000 ))
  while kill -0 "$pid" 2>/dev/null; do
    now=$(now_ms)
    if [[ ${R[$name.notready]} == - ]]; then
      code=$(http_code "http://127.0.0.1:${PORT[$name]}$READY_PATH")
      [[ $code != 200 ]] && R[$name.notready]=$(( $(now_ms) - t_term ))
    fi
    if [[ ${R[$name.lbdown]} == - ]]; then
      st=$(lb_status "$name")
      [[ $st == DOWN* || $st == MAINT* ]] && R[$name.lbdown]=$(( $(now_ms) - t_term ))
    fi
    if (( now > deadline )); then
      fail "server $name did not exit within ${STOP_TIMEOUT_S}s of SIGTERM: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.1
  done
  rc=0; wait "$pid" || rc=$?
  R[$name.drain]=$(( $(now_ms) - t_term )) R[$name.rc]=$rc
  PID[$name]=
  [[ $rc == 0 ]] || fail "server $name exited with status $rc after SIGTERM (see $WORK/$name.log)"
  log "restart $name: exited with status $rc after ${R[$name.drain]} ms"
  # HAProxy must take it out now at the latest.
  deadline=$(( $(now_ms) + 5000 ))
  while [[ ${R[$name.lbdown]} == - ]]; do
    st=$(lb_status "$name")
    [[ $st == DOWN* || $st == MAINT* ]] && R[$name.lbdown]=$(( $(now_ms) - t_term ))
    (( $(now_ms) < deadline )) || { fail "HAProxy did not mark $name DOWN"; break; }
    sleep 0.1
  done
  t_start=$(now_ms)
  start_server "$name"
  deadline=$(( t_start + START_TIMEOUT_S * 1000 ))
  while :; do
    kill -0 "${PID[$name]}" 2>/dev/null || { fail "server $name exited at restart (see $WORK/$name.log)"; return; }
    if [[ ${R[$name.ready]} == - ]] && ready "$name"; then
      R[$name.ready]=$(( $(now_ms) - t_start ))
    fi
    if [[ ${R[$name.ready]} != - ]] && lb_up "$name"; then
      R[$name.lbup]=$(( $(now_ms) - t_start ))
      break
    fi
    (( $(now_ms) < deadline )) || { fail "server $name not ready and UP within ${START_TIMEOUT_S}s of its start"; return; }
    sleep 0.1
  done
  log "restart $name: $READY_PATH 200 after ${R[$name.ready]} ms, UP in HAProxy after ${R[$name.lbup]} ms"
}
sleep "$FIRST_RESTART_AFTER"
restart a
sleep "$RESTART_GAP"
restart b
log "both restarted; waiting for the loads and their ledger checks"

LOAD_RC=()
for p in "${LOAD_PIDS[@]}"; do
  rc=0; wait "$p" || rc=$?
  LOAD_RC+=("$rc")
done
LOAD_PIDS=()
for name in a b; do snapshot_stats "$name" second-life; done
# Clarion's own refusals (each a 503): admission control, and a log not keeping up.
read -r shed rejected < <(cat "$WORK"/stats-*.json 2>/dev/null |
  jq -rs '[(map(.total.shed_overload // 0) | add // 0), (map(.total.rejected_overload // 0) | add // 0)] | @tsv' 2>/dev/null || echo "? ?")
# HAProxy's counters (the stats CSV; its log may drop lines under load): the backend's
# connection and response errors, retries and redispatches, answers by class.
lb_counters=$(curl -s -m 2 "http://127.0.0.1:${PORT[stats]}/stats;csv" | awk -F, '
  NR == 1 { sub(/^# /, ""); for (i = 1; i <= NF; i++) col[$i] = i; next }
  $1 == "clarion" && $2 == "BACKEND" {
    printf "backend: %s sessions, econ %s, eresp %s, retries %s, redispatches %s, 2xx %s, 4xx %s, 5xx %s",
      $col["stot"], $col["econ"], $col["eresp"], $col["wretr"], $col["wredis"], $col["hrsp_2xx"], $col["hrsp_4xx"], $col["hrsp_5xx"] }
  $1 == "clarion_api" && $2 == "FRONTEND" {
    fe = sprintf("; frontend: %s requests, 2xx %s, 5xx %s", $col["req_tot"], $col["hrsp_2xx"], $col["hrsp_5xx"]) }
  END { print fe }' || true)

# ---- the verdict ------------------------------------------------------------------------------
# clarion-loadtest exits 0 even when requests failed or the ledger is short: its exit status
# only says it ran. The figures come from its summary.json.
load_line() { # label -> one line of figures from its summary.json
  # Requests: answered with a 2xx, or not (another status, a transport error, a timeout, or
  # never sent before the deadline). Notifications: 202, or not (batch items carry their own).
  jq -r --arg lbl "$1" '
    (.http_status | to_entries | map(select((.key|tonumber) < 200 or (.key|tonumber) > 299)) | map(.value) | add // 0) as $non2xx
    | (.notification_status | to_entries | map(select(.key != "202")) | map(.value) | add // 0) as $non202
    | (.http_status | to_entries | map("\(.key):\(.value)") | join(",")) as $st
    | (.notification_status | to_entries | map("\(.key):\(.value)") | join(",")) as $nst
    | "\($lbl) \(.sent_requests) \(.completed_requests) \($non2xx) \(.transport_errors) \(.timeouts) \(.not_sent) \(.scheduled) \(.accepted) \($non202) \(.ledger.received // -1) \(.ledger.lost // -1) \(.ledger.short // -1) \(.ledger.duplicated // -1) \(.ledger.unexpected // -1) \(.ledger.drained // false) [\($st)] [\($nst)]"
  ' "$WORK/load-$1/summary.json"
}
SUMMARY=()
for i in 0 1; do
  label=$([[ $i == 0 ]] && echo single || echo batch)
  if [[ ${LOAD_RC[$i]} != 0 || ! -f $WORK/load-$label/summary.json ]]; then
    fail "$label load: clarion-loadtest exited ${LOAD_RC[$i]} without a summary (see $WORK/load-$label.txt)"
    continue
  fi
  line=$(load_line "$label")
  SUMMARY+=("$line")
  read -r _ sent answered non2xx terr tout notsent sched acc non202 recv lost short dup unexp drained st nst <<<"$line"
  (( non2xx == 0 )) || fail "$label: $non2xx requests answered other than 2xx $st"
  (( terr == 0 && tout == 0 )) || fail "$label: $terr transport errors, $tout timeouts (see $WORK/load-$label.txt)"
  (( notsent == 0 && sent == answered + terr + tout )) || fail "$label: $notsent notifications not sent, $sent sent / $answered answered"
  (( non202 == 0 && acc == sched )) || fail "$label: $acc of $sched notifications accepted, $non202 not 202 $nst"
  (( lost == 0 && short == 0 )) && [[ $drained == true ]] || fail "$label: ledger lost $lost, short $short, drained $drained"
  (( dup == 0 )) || fail "$label: $dup notifications delivered more than once"
  (( unexp == 0 )) || fail "$label: $unexp notifications delivered although not answered 202"
done

# The whole ledger, every seq of every run (registration runs included): none received twice,
# and receipts add up to what the runs saw.
ledger_json=$(curl -s -m 10 "http://127.0.0.1:${PORT[simctl]}/ledger" || true)
if [[ -z $ledger_json ]]; then
  fail "could not read the simulator's ledger"
else
  read -r total_receipts distinct dup_seqs < <(jq -r '
    [(.receipts), ([.counts[] | .[1]] | add // 0), ([.counts[] | select(.[2] > 1) | .[1]] | add // 0)] | @tsv' <<<"$ledger_json")
  (( dup_seqs == 0 )) || fail "simulator ledger: $dup_seqs seqs received more than once"
  (( total_receipts == distinct )) || fail "simulator ledger: $total_receipts receipts for $distinct seqs"
fi

# What HAProxy saw: answers by status, retries and redispatches (httplog: the counters field is
# actconn/feconn/beconn/srv_conn/retries, "+" before retries when redispatched), and the
# termination states of requests that failed.
haproxy_stats=$(awk '
  / clarion_api / {
    n = 0; for (i = 1; i <= NF; i++) if ($i ~ /^[-+]?[0-9]+\/[-+]?[0-9]+\/[-+]?[0-9]+\/[-+]?[0-9]+\/[-+]?[0-9]+$/) idx[++n] = i
    if (n < 2) next
    status = $(idx[1] + 1); counts = $(idx[2]); term = $(idx[2] - 1)
    split(counts, c, "/"); r = c[5]
    total++; by[status]++
    if (r ~ /^\+/) { redisp++; sub(/^\+/, "", r) }
    if (r + 0 > 0) retried++
    if (status !~ /^2/) bad[term]++
  }
  END {
    printf "%d requests;", total
    for (s in by) printf " %s:%d", s, by[s]
    printf "; retried %d, redispatched %d", retried, redisp
    for (t in bad) printf "; failed %s:%d", t, bad[t]
    print ""
  }' "$WORK/haproxy.log")

# ---- summary ------------------------------------------------------------------------------------
echo
echo "== rolling restart: READY_PATH=$READY_PATH, drain_delay_ms=$([[ $DRAIN_SUPPORTED == 1 ]] && echo "$DRAIN_DELAY_MS" || echo "n/a (unsupported)"), shutdown_grace_ms=$SHUTDOWN_GRACE_MS, $SHARDS shards each"
printf '%-7s %9s %9s %8s %7s %8s %9s %9s %9s %6s %6s %6s %s\n' load requests answered non-2xx errors timeouts accepted non-202 delivered lost dup unexp statuses
for line in "${SUMMARY[@]}"; do
  read -r label sent answered non2xx terr tout notsent sched acc non202 recv lost short dup unexp drained st nst <<<"$line"
  printf '%-7s %9s %9s %8s %7s %8s %9s %9s %9s %6s %6s %6s %s\n' "$label" "$sent" "$answered" "$non2xx" "$terr" "$tout" "$acc" "$non202" "$recv" "$lost" "$dup" "$unexp" "$st"
done
echo "ledger (whole): ${total_receipts:-?} receipts, ${distinct:-?} distinct seqs, ${dup_seqs:-?} received more than once"
echo "haproxy log: $haproxy_stats"
echo "haproxy stats: ${lb_counters:-?}"
echo "clarion refusals (503, all four server lives): shed_overload ${shed:-?}, rejected_overload ${rejected:-?}"
for name in a b; do
  printf 'restart %s: exit %s, SIGTERM->%s non-200 %s ms, ->HAProxy DOWN %s ms, ->exit (drain) %s ms; start->%s 200 %s ms, ->HAProxy UP %s ms\n' \
    "$name" "${R[$name.rc]:-?}" "$READY_PATH" "${R[$name.notready]:--}" "${R[$name.lbdown]:--}" "${R[$name.drain]:--}" \
    "$READY_PATH" "${R[$name.ready]:--}" "${R[$name.lbup]:--}"
done
echo "logs: $WORK/{a,b,sim,haproxy}.log, $WORK/load-{single,batch}.txt and summary.json"
if (( ${#FAILURES[@]} > 0 )); then
  echo "FAILED (${#FAILURES[@]}):"
  printf '  - %s\n' "${FAILURES[@]}"
  exit 1
fi
echo "PASSED"
