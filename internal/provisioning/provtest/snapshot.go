package provtest

import (
	"database/sql"
	"fmt"
	"slices"
	"testing"

	_ "modernc.org/sqlite" // the "sqlite" driver, as sqlstore registers it
)

// Snapshot is every registration record (key, etag, updated), every
// operation (id, registration ID, status) and every issued certificate
// (serial number, registration ID, revocation) in a dpsd SQLite database,
// read with plain SQL so that it sees exactly what is stored.
type Snapshot struct {
	Registrations []string
	Operations    []string
	Issued        []string
}

// OpenSnapshots opens the SQLite database at path read-only, for
// TakeSnapshot, and closes it when t ends.
func OpenSnapshots(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TakeSnapshot reads a Snapshot from db.
func TakeSnapshot(t testing.TB, db *sql.DB) Snapshot {
	t.Helper()
	var s Snapshot
	for _, q := range []struct {
		sql string
		out *[]string
	}{
		{`SELECT key || ' ' || etag || ' ' || updated FROM registrations ORDER BY key`, &s.Registrations},
		{`SELECT id || ' ' || registration_id || ' ' || status FROM operations ORDER BY id`, &s.Operations},
		{`SELECT key || ' ' || registration_id || ' ' || revoked FROM issued_certificates ORDER BY key`, &s.Issued},
	} {
		rows, err := db.Query(q.sql)
		if err != nil {
			t.Fatalf("snapshot: %v", err)
		}
		for rows.Next() {
			var v string
			if err := rows.Scan(&v); err != nil {
				t.Fatal(err)
			}
			*q.out = append(*q.out, v)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		rows.Close()
	}
	return s
}

func (s Snapshot) String() string {
	return fmt.Sprintf("%d registrations %v, %d operations, %d issued certificates", len(s.Registrations), s.Registrations, len(s.Operations), len(s.Issued))
}

// Unchanged checks that nothing was written between before and after: no
// registration record, no operation, no issued certificate.
func Unchanged(t testing.TB, before, after Snapshot) {
	t.Helper()
	if !slices.Equal(before.Registrations, after.Registrations) || !slices.Equal(before.Operations, after.Operations) || !slices.Equal(before.Issued, after.Issued) {
		t.Errorf("a refusal changed the store:\n before %s\n after  %s", before, after)
	}
}

// OneOperation checks that the only write between before and after is one
// operation: what a disabled enrollment writes (the answer to poll), and no
// registration record.
func OneOperation(t testing.TB, before, after Snapshot) {
	t.Helper()
	if !slices.Equal(before.Registrations, after.Registrations) {
		t.Errorf("a disabled enrollment wrote a registration record:\n before %s\n after  %s", before, after)
	}
	if len(after.Operations) != len(before.Operations)+1 {
		t.Errorf("operations: %d before, %d after; want one more (the disabled answer to poll)", len(before.Operations), len(after.Operations))
	}
}
