package storetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
)

// PostgresDSN returns the PostgreSQL server of the tests (DPS_TEST_PG_DSN),
// skipping the test without one except in CI, where a missing server must
// not pass unnoticed: there the test fails.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv("DPS_TEST_PG_DSN")
	if dsn == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("CI is set but DPS_TEST_PG_DSN is not: the PostgreSQL tests must run in CI (scripts/test.sh starts a throwaway server)")
		}
		t.Skip("DPS_TEST_PG_DSN is not set; run under scripts/pg-throwaway.sh")
	}
	return dsn
}

// PostgresSchema creates a schema of its own for one test, dropped when the
// test ends, and returns a DSN whose search_path selects it.
func PostgresSchema(t testing.TB, dsn string) string {
	t.Helper()
	name := "t_" + randomHex(6)
	admin(t, dsn, "CREATE SCHEMA "+name, "DROP SCHEMA "+name+" CASCADE")
	return withURL(t, dsn, func(u *url.URL) {
		q := u.Query()
		q.Set("search_path", name)
		u.RawQuery = q.Encode()
	})
}

// PostgresDatabase creates a database of its own for one test, dropped
// when the test ends, and returns its DSN. Unlike a schema, a database has
// its own advisory locks, as a deployment would.
func PostgresDatabase(t testing.TB, dsn string) string {
	t.Helper()
	name := "t_" + randomHex(6)
	admin(t, dsn, "CREATE DATABASE "+name, "DROP DATABASE "+name+" WITH (FORCE)")
	return withURL(t, dsn, func(u *url.URL) { u.Path = "/" + name })
}

// admin runs create on the server of dsn now, and drop when the test ends.
func admin(t testing.TB, dsn, create, drop string) {
	t.Helper()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.ExecContext(context.Background(), create); err != nil {
		t.Fatalf("%s: %v", create, err)
	}
	t.Cleanup(func() {
		if _, err := db.ExecContext(context.Background(), drop); err != nil {
			t.Errorf("%s: %v", drop, err)
		}
	})
}

func withURL(t testing.TB, dsn string, edit func(*url.URL)) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	edit(u)
	return u.String()
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
