#!/usr/bin/env bash
# Start a throwaway PostgreSQL on 127.0.0.1:$PGPORT as the postgres user,
# run the given command with DPS_TEST_PG_DSN set, then stop and delete it.
# Usage (as root): scripts/pg-throwaway.sh go test ./...
set -euo pipefail
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
PGPORT=${PGPORT:-55432}
DIR=$(mktemp -d /tmp/pg.XXXXXX)
chown postgres:postgres "$DIR"
as_pg() { runuser -u postgres -- "$@"; }
stop() {
  as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap stop EXIT
as_pg "$PGBIN/initdb" -D "$DIR/data" -U postgres --auth=trust -E UTF8 --no-sync >"$DIR/initdb.log"
as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 30 \
  -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $DIR -c fsync=off -c synchronous_commit=off -c full_page_writes=off" start >/dev/null
as_pg "$PGBIN/createdb" -h 127.0.0.1 -p "$PGPORT" -U postgres dpstest
export DPS_TEST_PG_DSN="postgres://postgres@127.0.0.1:$PGPORT/dpstest?sslmode=disable"
"$@"
