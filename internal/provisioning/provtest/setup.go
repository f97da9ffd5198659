package provtest

import (
	"bytes"
	"context"
	"path/filepath"
	"sync"
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

// LogBuffer collects a server's log for assertions and failure output.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns the log, cut to its last 30,000 bytes.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf.String()
	if len(s) > 30000 {
		s = "...\n" + s[len(s)-30000:]
	}
	return s
}
