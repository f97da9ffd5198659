#!/usr/bin/env bash
# Runs every fuzz target of the module briefly: FUZZTIME each (default 3s),
# one after another. scripts/test.sh runs it in CI, so that a target that no
# longer builds, or an input that breaks one within seconds, fails the build.
# Targets are found by name (func FuzzX in a _test.go file): a new one runs
# without being listed anywhere. An input that fails is saved under the
# package's testdata/fuzz, where plain `go test` replays it from then on.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZTIME=${FUZZTIME:-3s}
start=$SECONDS
n=0
while read -r file name; do
  pkg=./$(dirname "$file")
  t0=$SECONDS
  if ! out=$(go test -run='^$' -fuzz="^${name}\$" -fuzztime="$FUZZTIME" "$pkg" 2>&1); then
    echo "$out" >&2
    echo "fuzz: $pkg $name FAILED (the input is saved under $pkg/testdata/fuzz/$name)" >&2
    exit 1
  fi
  echo "fuzz: $pkg $name: $((SECONDS - t0)) s"
  n=$((n + 1))
done < <(find . -name '*_test.go' -not -path './test/node/*' -print0 |
  xargs -0 grep -HE '^func Fuzz[A-Za-z0-9_]+\(' |
  sed -E 's|^\./([^:]+):func (Fuzz[A-Za-z0-9_]+)\(.*|\1 \2|' | sort)
echo "fuzz: $n targets, $((SECONDS - start)) s"
