#!/usr/bin/env bash
# Static checks CI runs before the tests: go.mod and go.sum tidy, gofmt,
# go vet and staticcheck (version pinned here). Exits non-zero on the first
# failing check, saying which.
set -euo pipefail
cd "$(dirname "$0")/.."

STATICCHECK_VERSION=v0.8.2

if ! go mod tidy -diff; then
  echo "check: go.mod/go.sum are not tidy; run 'go mod tidy'" >&2
  exit 1
fi
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then
  echo "check: gofmt would change:" >&2
  echo "$unformatted" >&2
  exit 1
fi
go vet ./...
go run "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION" ./...
echo "check: tidy, gofmt, vet and staticcheck are clean"
