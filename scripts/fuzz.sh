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

# saved lists the failing inputs saved for a target.
saved() { ls "$1/testdata/fuzz/$2" 2>/dev/null || true; }

while read -r file name; do
  pkg=./$(dirname "$file")
  t0=$SECONDS
  for attempt in 1 2 3; do
    before=$(saved "$pkg" "$name")
    if out=$(go test -run='^$' -fuzz="^${name}\$" -fuzztime="$FUZZTIME" "$pkg" 2>&1); then
      break
    fi
    # Go's fuzzing coordinator (up to Go 1.26 at least) can report its own
    # -fuzztime deadline as a failure when a worker is busy at that instant
    # (golang/go#75804). Such a run saves no input; a failing input always
    # is. Only that case is run again.
    if [ "$attempt" -lt 3 ] && [ "$(saved "$pkg" "$name")" = "$before" ] &&
      grep -q '^    context deadline exceeded$' <<<"$out"; then
      echo "fuzz: $pkg $name: the fuzzing coordinator's deadline race, no input failed; running it again" >&2
      continue
    fi
    echo "$out" >&2
    if [ "$(saved "$pkg" "$name")" != "$before" ]; then
      echo "fuzz: $pkg $name FAILED (the input is saved under $pkg/testdata/fuzz/$name)" >&2
    else
      echo "fuzz: $pkg $name FAILED" >&2
    fi
    exit 1
  done
  echo "fuzz: $pkg $name: $((SECONDS - t0)) s"
  n=$((n + 1))
done < <(find . -name '*_test.go' -not -path './test/node/*' -print0 |
  xargs -0 grep -HE '^func Fuzz[A-Za-z0-9_]+\(' |
  sed -E 's|^\./([^:]+):func (Fuzz[A-Za-z0-9_]+)\(.*|\1 \2|' | sort)
echo "fuzz: $n targets, $((SECONDS - start)) s"
