package provtest

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/dpsd/dpsd/internal/instance"
	"github.com/dpsd/dpsd/internal/store"
	"github.com/dpsd/dpsd/internal/store/sqlstore"
)

// OpenStore opens a SQLite store in t.TempDir() and initializes an instance
// in it; dbPath is the file, for OpenSnapshots. The caller closes the store
// (its harness decides when).
func OpenStore(t testing.TB) (st *sqlstore.Store, inst *store.Instance, dbPath string) {
	t.Helper()
	ctx := context.Background()
	dbPath = filepath.Join(t.TempDir(), "dpsd.db")
	st, err := sqlstore.Open(ctx, dbPath, sqlstore.Options{})
	if err != nil {
		t.Fatalf("sqlstore.Open: %v", err)
	}
	inst, _, err = instance.Ensure(ctx, st, nil)
	if err != nil {
		st.Close()
		t.Fatalf("instance.Ensure: %v", err)
	}
	return st, inst, dbPath
}
