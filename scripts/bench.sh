#!/usr/bin/env bash
# Runs the benchmarks docs/benchmarks.md reports, one after another on this
# machine, and writes each report (dpsd-load's JSON) and a summary to OUT_DIR:
#
#   https-x509-new        X.509, a new TLS connection per device, against
#                         the bare mutual-TLS handshake (same certificates)
#   https-x509-new-half   the same, paced at half the rate it reached:
#                         time to assigned
#   https-sym-keepalive   symmetric key on kept-alive connections, against a
#                         trivial answer on the same connections
#   https-x509-keepalive  X.509 re-registrations on kept-alive connections
#   mqtt-x509-new         MQTT over TLS, X.509, a new connection per device,
#                         against TLS + CONNECT/CONNACK
#   pg-*                  with BENCH_PG=1 (as root, PostgreSQL's server
#                         binaries installed): https-x509-new and
#                         https-sym-keepalive (no baseline) on a
#                         throwaway PostgreSQL with its durable defaults
#                         (fsync, synchronous_commit=on), with the CPU the
#                         database used per registration; kept-alive
#                         symmetric key alternates, in BENCH_PG_ROUNDS (5)
#                         rounds, with a fresh SQLite dpsd running alongside
#
#   scripts/bench.sh [OUT_DIR]                 default ./bench
#   BENCH_SECONDS=20 BENCH_CONCURRENCY=8 BENCH_ROUNDS=10 BENCH_PG=1 scripts/bench.sh
#
# BENCH_SECONDS is each phase's time, which BENCH_ROUNDS (10) divides into
# rounds that alternate the baseline and the workload (dpsd-load --rounds):
# a machine whose speed drifts then slows both alike.
#
# Needs jq (and, with BENCH_PG=1, pgrep). The SQLite workloads run on one
# dpsd started on a fresh data directory (WAL, synchronous=FULL), the
# PostgreSQL ones on another; both with the fast path.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-bench}
secs=${BENCH_SECONDS:-20}
conc=${BENCH_CONCURRENCY:-8}
rounds=${BENCH_ROUNDS:-10}
https=127.0.0.1:${BENCH_HTTPS_PORT:-18471}
mqtt=127.0.0.1:${BENCH_MQTT_PORT:-18871}
https2=127.0.0.1:$((${BENCH_HTTPS_PORT:-18471} + 1))
mqtt2=127.0.0.1:$((${BENCH_MQTT_PORT:-18871} + 1))
pgrounds=${BENCH_PG_ROUNDS:-5}
pgport=${BENCH_PG_PORT:-55490}

command -v jq >/dev/null || { echo "bench: needs jq" >&2; exit 1; }
if [ "${BENCH_PG:-}" = 1 ]; then
  command -v pgrep >/dev/null || { echo "bench: BENCH_PG=1 needs pgrep" >&2; exit 1; }
fi
mkdir -p "$out"
tmp=$(mktemp -d)
pid=
pid2=
pgdir=
store=
stop_dpsd() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=; fi
}
stop_pg() {
  if [ -n "$pgdir" ]; then
    runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdir/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$pgdir"; pgdir=
  fi
}
cleanup() {
  stop_dpsd
  if [ -n "$pid2" ]; then kill "$pid2" 2>/dev/null || true; wait "$pid2" 2>/dev/null || true; fi
  stop_pg
  rm -rf "$tmp"
}
trap cleanup EXIT

CGO_ENABLED=0 go build -o "$tmp/dpsd" ./cmd/dpsd
go build -o "$tmp/dpsd-load" ./cmd/dpsd-load

# wait_started DATA LOG: waits for the dpsd serving DATA to be up.
wait_started() {
  for _ in $(seq 300); do
    [ -f "$1/server.json" ] && return
    sleep 0.1
  done
  echo "bench: dpsd serve did not start; see $2" >&2
  exit 1
}

# start_dpsd NAME [serve flags...]: a fresh dpsd on its own data directory.
start_dpsd() {
  local name=$1; shift
  rm -rf "$tmp/data"
  "$tmp/dpsd" serve --data "$tmp/data" --https-addr "$https" --mqtt-addr "$mqtt" \
    --log-level warn "$@" 2>"$out/$name-serve.log" &
  pid=$!
  wait_started "$tmp/data" "$out/$name-serve.log"
  login=$("$tmp/dpsd" info --data "$tmp/data" ${store:+--store "$store"} serviceConnectionString)
  cafile=$("$tmp/dpsd" info --data "$tmp/data" ${store:+--store "$store"} serverCAFile)
}

# load NAME ARGS...: one dpsd-load run, its JSON report in OUT_DIR/NAME.json.
load() {
  local name=$1; shift
  "$tmp/dpsd-load" --login "$login" --ca-file "$cafile" --endpoint "$https" \
    --mqtt-endpoint "$mqtt" --server-pid "$pid" --concurrency "$conc" --duration "${secs}s" \
    --rounds "$rounds" --output json "$@" >"$out/$name.json"
  jq -r --arg n "$name" '"\($n): \(.workload.perSecond|floor)/s, baseline \(.baseline.perSecond // 0|floor)/s, ratio \(.ratio // 0), p50 \(.workload.latencyMs.p50) ms, p99 \(.workload.latencyMs.p99) ms, server CPU \(.workload.server.cpuPerOpMs // 0) ms/op, RSS \(.workload.server.peakRssMB // 0) MB"' \
    "$out/$name.json" | tee -a "$out/summary.txt"
}

# X.509 identities are made beforehand; enough for the run's first
# registrations.
devices=$((secs * 1500))
: >"$out/summary.txt"
{ date -u +%FT%TZ; nproc; go version; } >>"$out/summary.txt"

workloads() {
  local p=$1
  load "${p}https-x509-new" --transport https --attestation x509 --devices "$devices"
  local peak
  peak=$(jq '.workload.perSecond|floor' "$out/${p}https-x509-new.json")
  load "${p}https-x509-new-half" --transport https --attestation x509 --devices "$devices" \
    --rate "$((peak / 2))/s" --baseline=false
  load "${p}https-sym-keepalive" --transport https --attestation symmetric-key --keep-alive
  load "${p}https-x509-keepalive" --transport https --attestation x509 --keep-alive
}

start_dpsd sqlite
workloads ""
load mqtt-x509-new --transport mqtt --attestation x509 --devices "$devices"
stop_dpsd

if [ "${BENCH_PG:-}" = 1 ]; then
  pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  pgdir=$(mktemp -d /tmp/pgbench.XXXXXX)
  chown postgres:postgres "$pgdir"
  runuser -u postgres -- "$pgbin/initdb" -D "$pgdir/data" -U postgres --auth=trust -E UTF8 >/dev/null
  # PostgreSQL's durable defaults: fsync on, synchronous_commit on.
  runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/server.log" -w -t 30 \
    -o "-c listen_addresses=127.0.0.1 -p $pgport -k $pgdir" start >/dev/null
  runuser -u postgres -- "$pgbin/createdb" -h 127.0.0.1 -p "$pgport" -U postgres dpsd
  pgpid=$(head -1 "$pgdir/data/postmaster.pid")
  # The database's CPU in clock ticks: the postmaster and its live
  # children, plus what its ended children used.
  pgticks() {
    local t=0 p
    for p in $pgpid $(pgrep -P "$pgpid"); do
      t=$((t + $(awk '{print $14+$15+$16+$17}' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$t"
  }
  store="postgres://postgres@127.0.0.1:$pgport/dpsd?sslmode=disable"
  start_dpsd pg --store "$store"
  hz=$(getconf CLK_TCK)
  pgcpu() { # NAME TICKS OPS
    echo "$1: PostgreSQL CPU $(awk -v t="$2" -v hz="$hz" -v n="$3" 'BEGIN { printf "%.3f", t * 1000 / hz / n }') ms/registration" |
      tee -a "$out/summary.txt"
  }
  before=$(pgticks)
  load pg-https-x509-new --transport https --attestation x509 --devices "$devices" --baseline=false
  pgcpu pg-https-x509-new "$(($(pgticks) - before))" "$(jq '.workload.ops - .workload.errors' "$out/pg-https-x509-new.json")"

  # pg-https-sym-keepalive: against a second, fresh SQLite dpsd running
  # alongside, in BENCH_PG_ROUNDS (5) rounds that alternate the two, so that
  # the machine's drift falls on both alike; the ratio is PostgreSQL's
  # registrations over SQLite's in the same time.
  "$tmp/dpsd" serve --data "$tmp/data-sqlite" --https-addr "$https2" --mqtt-addr "$mqtt2" \
    --log-level warn 2>"$out/sqlite-alongside-serve.log" &
  pid2=$!
  wait_started "$tmp/data-sqlite" "$out/sqlite-alongside-serve.log"
  login2=$("$tmp/dpsd" info --data "$tmp/data-sqlite" serviceConnectionString)
  cafile2=$("$tmp/dpsd" info --data "$tmp/data-sqlite" serverCAFile)
  slice=$(( (secs + pgrounds - 1) / pgrounds ))
  ticks=0
  for r in $(seq "$pgrounds"); do
    "$tmp/dpsd-load" --login "$login2" --ca-file "$cafile2" --endpoint "$https2" \
      --server-pid "$pid2" --concurrency "$conc" --duration "${slice}s" --attestation symmetric-key --keep-alive \
      --baseline=false --output json >"$out/sqlite-alongside-https-sym-keepalive-$r.json"
    before=$(pgticks)
    "$tmp/dpsd-load" --login "$login" --ca-file "$cafile" --endpoint "$https" \
      --server-pid "$pid" --concurrency "$conc" --duration "${slice}s" --attestation symmetric-key --keep-alive \
      --baseline=false --output json >"$out/pg-https-sym-keepalive-$r.json"
    ticks=$((ticks + $(pgticks) - before))
  done
  sum='map(.workload) | {ops: (map(.ops - .errors) | add), seconds: (map(.seconds) | add), cpu: (map(.server.cpuSeconds) | add)}'
  pgs=$(jq -s "$sum" "$out"/pg-https-sym-keepalive-*.json)
  sqs=$(jq -s "$sum" "$out"/sqlite-alongside-https-sym-keepalive-*.json)
  jq -rn --argjson p "$pgs" --argjson q "$sqs" --arg n "$pgrounds" \
    '"pg-https-sym-keepalive: \($p.ops / $p.seconds | floor)/s, SQLite alongside \($q.ops / $q.seconds | floor)/s, ratio \(($p.ops / $p.seconds) / ($q.ops / $q.seconds) * 1000 | round / 1000) (\($n) alternating rounds), server CPU \($p.cpu * 1000 / $p.ops * 10000 | round / 10000) ms/op"' |
    tee -a "$out/summary.txt"
  pgcpu pg-https-sym-keepalive "$ticks" "$(jq -n --argjson p "$pgs" '$p.ops')"
  kill "$pid2"; wait "$pid2" 2>/dev/null || true; pid2=
  stop_dpsd
fi
echo "bench: reports in $out/ (summary.txt)"
