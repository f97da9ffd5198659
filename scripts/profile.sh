#!/usr/bin/env bash
# Profiles dpsd's registration hot path under load: builds dpsd and
# dpsd-load, starts `dpsd serve` on a fresh data directory with its
# profiling endpoints on loopback (--pprof-addr), and runs dpsd-load on each
# workload for PROFILE_SECONDS with --server-pprof and --profile-dir, which
# save the server's CPU profile and allocation profile (what was allocated
# during the workload) and report allocations per registration. Each
# profile's top functions are written beside it (.top.txt).
#
#   scripts/profile.sh [OUT_DIR]          default ./profiles
#   PROFILE_SECONDS=30 PROFILE_CONCURRENCY=16 scripts/profile.sh
#
# Then, e.g.: go tool pprof -http :8080 profiles/https-x509-new-cpu.pb.gz
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-profiles}
secs=${PROFILE_SECONDS:-15}
concurrency=${PROFILE_CONCURRENCY:-8}
https=127.0.0.1:${PROFILE_HTTPS_PORT:-18461}
mqtt=127.0.0.1:${PROFILE_MQTT_PORT:-18861}
pprof=127.0.0.1:${PROFILE_PPROF_PORT:-16061}

mkdir -p "$out"
tmp=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

CGO_ENABLED=0 go build -o "$tmp/dpsd" ./cmd/dpsd
go build -o "$tmp/dpsd-load" ./cmd/dpsd-load

"$tmp/dpsd" serve --data "$tmp/data" --https-addr "$https" --mqtt-addr "$mqtt" --pprof-addr "$pprof" \
  --log-level warn 2>"$out/serve.log" &
pid=$!
for _ in $(seq 100); do [ -f "$tmp/data/server.json" ] && break; sleep 0.1; done
[ -f "$tmp/data/server.json" ] || { echo "profile: dpsd serve did not start; see $out/serve.log" >&2; exit 1; }
login=$("$tmp/dpsd" info --data "$tmp/data" serviceConnectionString)

# One workload: dpsd-load ARGS..., with the profiles named after it.
profile() {
  "$tmp/dpsd-load" --login "$login" --ca-file "$tmp/data/server-ca.pem" --endpoint "$https" --mqtt-endpoint "$mqtt" \
    --server-pid "$pid" --server-pprof "http://$pprof" --profile-dir "$out" \
    --duration "${secs}s" --concurrency "$concurrency" --baseline=false "$@"
}
# X.509 identities are made beforehand: enough for first registrations.
devices=$((secs * 2000))
profile --transport https --attestation x509 --devices "$devices"
profile --transport https --attestation symmetric-key --keep-alive
profile --transport https --attestation x509 --keep-alive
profile --transport mqtt --attestation x509 --devices "$devices"
profile --transport mqtt --attestation symmetric-key

for f in "$out"/*-cpu.pb.gz; do
  go tool pprof -top -nodecount=40 "$f" >"${f%.pb.gz}.top.txt" 2>/dev/null
done
for f in "$out"/*-allocs.pb.gz; do
  go tool pprof -top -nodecount=40 -sample_index=alloc_objects "$f" >"${f%.pb.gz}.top.txt" 2>/dev/null
done
echo "profile: profiles and their top functions in $out/"
