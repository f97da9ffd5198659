package sqlstore

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/dpsd/dpsd/internal/store"
)

// migrateFromFirst opens dsn at schema version 1 with the records of
// rows (SQL inserts), then migrates it to this binary's version.
func migrateFromFirst(t *testing.T, dsn string, rows ...string) *Store {
	t.Helper()
	ctx := t.Context()
	s, err := Open(ctx, dsn, Options{SkipSchemaCheck: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	conn, err := s.w.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, createMigrationsTable); err != nil {
		t.Fatal(err)
	}
	if _, err := s.apply(ctx, conn, migrations[0]); err != nil {
		t.Fatal(err)
	}
	for _, q := range rows {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	conn.Close()
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

// testPlacementMigration: records written before placements existed are
// placed where they were assigned; others are not placed.
func testPlacementMigration(t *testing.T, dsn string) {
	s := migrateFromFirst(t, dsn,
		`INSERT INTO registrations (key, group_key, group_id, doc, etag, created, updated) VALUES `+
			`('dev-1', NULL, '', '{"registrationId":"Dev-1","assignedHub":"hub1.example","deviceId":"Device-1","status":"assigned","substatus":"initialAssignment"}', 'ZQ==', 1, 1), `+
			`('dev-2', NULL, '', '{"registrationId":"dev-2","status":"failed","errorCode":400208,"errorMessage":"no hub"}', 'ZQ==', 1, 1)`,
		`INSERT INTO linked_hubs (key, name, connection_string, location, allocation_weight, apply_allocation_policy, etag, created, updated) `+
			`VALUES ('hub1.example', 'hub1.example', '', '', 1, TRUE, 'e', 1, 1)`,
	)
	ctx := context.Background()
	for id, want := range map[string]store.Placement{"dev-1": {Hub: "hub1.example", DeviceID: "Device-1"}, "dev-2": {}} {
		r, err := s.Registration(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if r.Placement != want || r.AppliedTwin != nil {
			t.Errorf("%s: placement %+v, applied twin %v after the migration; want %+v and none", id, r.Placement, r.AppliedTwin, want)
		}
	}
	h, err := s.LinkedHub(ctx, "hub1.example")
	if err != nil {
		t.Fatal(err)
	}
	if h.DeviceRegistry != "none" {
		t.Errorf("a hub linked before device registries has registry %q, want none", h.DeviceRegistry)
	}
}

func TestSQLitePlacementMigration(t *testing.T) {
	testPlacementMigration(t, filepath.Join(t.TempDir(), "dpsd.db"))
}

func TestPostgresPlacementMigration(t *testing.T) {
	testPlacementMigration(t, pgSchema(t, pgDSN(t)))
}
