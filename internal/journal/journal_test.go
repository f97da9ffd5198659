package journal_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/dpsd/dpsd/internal/journal"
	"github.com/dpsd/dpsd/internal/store"
	"github.com/dpsd/dpsd/internal/store/sqlstore"
	"github.com/dpsd/dpsd/internal/testutil"
)

func openStore(t *testing.T) store.Store {
	t.Helper()
	st, err := sqlstore.Open(t.Context(), filepath.Join(t.TempDir(), "dpsd.db"), sqlstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// gated is a store whose journal writes wait for the gate, or fail.
type gated struct {
	store.Store
	gate chan struct{} // nil: no wait
	fail bool

	mu     sync.Mutex
	writes int
}

func (g *gated) AddRefusals(ctx context.Context, rs []*store.Refusal) error {
	g.mu.Lock()
	g.writes++
	g.mu.Unlock()
	if g.gate != nil {
		<-g.gate
	}
	if g.fail {
		return errors.New("disk full")
	}
	return g.Store.AddRefusals(ctx, rs)
}

func entry(i int, at time.Time) *store.Refusal {
	return &store.Refusal{Time: at, Transport: "https", Operation: "register", RegistrationID: fmt.Sprintf("dev-%d", i),
		Credential: "no credentials", Status: 401, ErrorCode: 401002, Reason: fmt.Sprintf("reason %d", i)}
}

func all(t *testing.T, st store.Store) []*store.Refusal {
	t.Helper()
	return testutil.All(t, func(ctx context.Context, after string, limit int) (store.Page[*store.Refusal], error) {
		return st.Refusals(ctx, store.RefusalFilter{}, after, limit)
	})
}

// counter reads dpsd_refusal_journal_entries_total{outcome}.
func counter(t *testing.T, reg *prometheus.Registry, outcome string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "dpsd_refusal_journal_entries_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if labelIs(m, "outcome", outcome) {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no dpsd_refusal_journal_entries_total{outcome=%q}", outcome)
	return 0
}

func labelIs(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

func flush(t *testing.T, j *journal.Journal) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := j.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestBounds: the journal keeps the newest MaxEntries entries younger than
// MaxAge, and drops the oldest first.
func TestBounds(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name       string
		maxEntries int
		maxAge     time.Duration
		want       []string // reasons, newest first
	}{
		{"count", 3, time.Hour, []string{"reason 9", "reason 8", "reason 7"}},
		{"age", 100, 4*time.Minute + time.Second, []string{"reason 9", "reason 8", "reason 7", "reason 6", "reason 5"}},
		{"both", 2, 4*time.Minute + time.Second, []string{"reason 9", "reason 8"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := openStore(t)
			j := journal.New(st, journal.Options{MaxEntries: tc.maxEntries, MaxAge: tc.maxAge, Now: func() time.Time { return now }})
			defer j.Close()
			for i := range 10 { // entry i is 9-i minutes old
				j.Record(entry(i, now.Add(time.Duration(i-9)*time.Minute)))
			}
			flush(t, j)
			got := all(t, st)
			var reasons []string
			for _, r := range got {
				reasons = append(reasons, r.Reason)
			}
			if fmt.Sprint(reasons) != fmt.Sprint(tc.want) {
				t.Fatalf("journal holds %q, want %q", reasons, tc.want)
			}
		})
	}
}

// TestFullQueueDrops: while the store is slow, Record never blocks; what
// the queue cannot hold is dropped and counted, and the rest is written.
func TestFullQueueDrops(t *testing.T) {
	g := &gated{Store: openStore(t), gate: make(chan struct{})}
	reg := prometheus.NewRegistry()
	j := journal.New(g, journal.Options{QueueSize: 4, BatchSize: 1, Registry: reg})
	defer j.Close()
	j.Record(entry(0, time.Time{}))
	// The writer holds entry 0 at the gate; the queue takes 4 more.
	for deadline := time.Now().Add(10 * time.Second); ; {
		g.mu.Lock()
		n := g.writes
		g.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the writer did not start writing")
		}
		time.Sleep(time.Millisecond)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; i <= 20; i++ {
			j.Record(entry(i, time.Time{}))
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Record blocked on a full queue")
	}
	if got := counter(t, reg, "dropped"); got != 16 {
		t.Errorf("dropped = %v, want 16", got)
	}
	close(g.gate)
	flush(t, j)
	if got := len(all(t, g.Store)); got != 5 {
		t.Errorf("%d entries written, want 5", got)
	}
	if got := counter(t, reg, "written"); got != 5 {
		t.Errorf("written = %v, want 5", got)
	}
}

// TestWriteFailure: a failed write loses its batch, counted and logged;
// the journal goes on writing once the store recovers.
func TestWriteFailure(t *testing.T) {
	g := &gated{Store: openStore(t), fail: true}
	reg := prometheus.NewRegistry()
	log, logs := testutil.NewLogger(t, 0)
	j := journal.New(g, journal.Options{Registry: reg, Log: log})
	defer j.Close()
	for i := range 3 {
		j.Record(entry(i, time.Time{}))
	}
	flush(t, j)
	if got := counter(t, reg, "failed"); got != 3 {
		t.Errorf("failed = %v, want 3", got)
	}
	if logs.Count("the refusal journal could not be written") != 1 {
		t.Errorf("want one warning, log:\n%s", logs)
	}
	g.mu.Lock()
	g.fail = false
	g.mu.Unlock()
	j.Record(entry(9, time.Time{}))
	flush(t, j)
	if got := all(t, g.Store); len(got) != 1 || got[0].Reason != "reason 9" {
		t.Errorf("after recovery the journal holds %+v, want reason 9 alone", got)
	}
}

// TestCloseWrites: Close writes what is queued.
func TestCloseWrites(t *testing.T) {
	st := openStore(t)
	j := journal.New(st, journal.Options{FlushInterval: time.Hour})
	for i := range 7 {
		j.Record(entry(i, time.Time{}))
	}
	j.Close()
	if got := len(all(t, st)); got != 7 {
		t.Errorf("%d entries after Close, want 7", got)
	}
	j.Record(entry(8, time.Time{})) // after Close: dropped, no panic
}
