#!/usr/bin/env bash
# Runs every dpsd test: unit and table tests, the store contract suite on
# SQLite and PostgreSQL, the CLI scripts, and the end-to-end tests that start
# the real server and drive it with curl, the official Azure IoT Node.js SDKs
# and mosquitto clients; then, in CI (or with FUZZ=1), every fuzz target for
# a few seconds (scripts/fuzz.sh).
#
# Needs: Go, Node.js + npm, curl, openssl, mosquitto-clients, PostgreSQL's
# server binaries (a throwaway server is started when DPS_TEST_PG_DSN is not
# set), gcc with libssl-dev for the TPM simulator (cgo; the dpsd binary
# itself is built without cgo), and Chromium (/usr/bin/chromium) for the web
# console's browser test. .ci/run installs all of these on a fresh Debian
# machine.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d test/node/node_modules ]; then
  npm ci --prefix test/node --no-audit --no-fund --ignore-scripts
fi

run_tests() { go test -race -count=1 -timeout 40m "$@" ./...; }

if [ -z "${DPS_TEST_PG_DSN:-}" ] && ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  # A throwaway PostgreSQL for the store contract and multi-node tests.
  scripts/pg-throwaway.sh bash -c "$(declare -f run_tests); run_tests $*"
else
  run_tests "$@"
fi

if [ -n "${CI:-}${FUZZ:-}" ]; then
  scripts/fuzz.sh
fi
