package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
)

// TestSQLiteErrorKinds classifies errors that SQLite itself returned.
func TestSQLiteErrorKinds(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "kinds.db")
	open := func() *sql.DB {
		db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(0)")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		db.SetMaxOpenConns(1)
		return db
	}
	a, b := open(), open()
	if _, err := a.ExecContext(ctx, `CREATE TABLE t (k INTEGER PRIMARY KEY, u TEXT UNIQUE)`); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ExecContext(ctx, `INSERT INTO t VALUES (1, 'x')`); err != nil {
		t.Fatal(err)
	}
	errOf := func(db *sql.DB, q string) error {
		_, err := db.ExecContext(ctx, q)
		if err == nil {
			t.Fatalf("%s: no error", q)
		}
		return err
	}
	primary := errOf(a, `INSERT INTO t VALUES (1, 'y')`)
	unique := errOf(a, `INSERT INTO t VALUES (2, 'x')`)
	syntax := errOf(a, `INSERT INTO nowhere VALUES (1)`)

	conn, err := a.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		t.Fatal(err)
	}
	locked := errOf(b, `INSERT INTO t VALUES (3, 'z')`)
	if _, err := conn.ExecContext(ctx, `ROLLBACK`); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name                  string
		err                   error
		busy, unique, unavail bool
	}{
		{"primary key", primary, false, true, false},
		{"unique", unique, false, true, false},
		{"no such table", syntax, false, false, false},
		{"locked", locked, true, false, true},
		{"wrapped lock", fmt.Errorf("put: %w", locked), true, false, true},
		{"not SQLite's", errors.New("database is locked"), false, false, false},
	} {
		if got := busy(c.err); got != c.busy {
			t.Errorf("%s: busy = %v, want %v (%v)", c.name, got, c.busy, c.err)
		}
		if got := uniqueViolation(c.err); got != c.unique {
			t.Errorf("%s: uniqueViolation = %v, want %v (%v)", c.name, got, c.unique, c.err)
		}
		if got := unavailable(context.Background(), c.err); got != c.unavail {
			t.Errorf("%s: unavailable = %v, want %v (%v)", c.name, got, c.unavail, c.err)
		}
	}
}
