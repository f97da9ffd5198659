package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/store"
)

// The group commit's rules, on both engines, with batches made
// deterministic: a transaction elsewhere holds the first write up (SQLite's
// writer connection, a PostgreSQL row lock on the record it writes), the
// writes a test submits meanwhile queue behind it, and the test lets go
// once they are queued. The store contract suite checks the same rules from
// outside, with whatever batches concurrent calls happen to form.

// commitRig is a store whose committer a test can hold up.
type commitRig struct {
	s *Store
	// hold keeps the committer's next transaction from getting anywhere
	// until release is called; the first write after it must be that of
	// the record "blocker".
	hold func(t *testing.T) (release func())

	mu    sync.Mutex
	sizes []int // batch sizes observed
}

func (r *commitRig) batches() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.sizes)
}

// commitRigs returns a rig per engine (PostgreSQL when the tests have a
// server), each opened with opts.
func commitRigs(t *testing.T, opts Options) map[string]func(t *testing.T) *commitRig {
	rigs := map[string]func(t *testing.T) *commitRig{
		"sqlite": func(t *testing.T) *commitRig {
			r := newCommitRig(t, opts, func(opts Options) *Store { return openSQLite(t, opts) })
			r.hold = func(t *testing.T) func() {
				// The writer pool has one connection.
				tx, err := r.s.w.begin(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				return func() { tx.Rollback() }
			}
			return r
		},
	}
	// Without a server, TestPostgres says so (and fails in CI).
	if dsn := os.Getenv("DPS_TEST_PG_DSN"); dsn != "" {
		rigs["postgres"] = func(t *testing.T) *commitRig {
			dsn := pgSchema(t, dsn)
			return pgCommitRig(t, dsn, dsn, opts)
		}
	}
	return rigs
}

// newCommitRig opens a store with open and writes the record "blocker".
func newCommitRig(t *testing.T, opts Options, open func(opts Options) *Store) *commitRig {
	r := &commitRig{}
	opts.ObserveBatch = func(n int) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.sizes = append(r.sizes, n)
	}
	r.s = open(opts)
	if _, err := r.s.SaveRegistration(t.Context(), testRecord("blocker", "hub0"), "", nil); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	r.sizes = nil
	r.mu.Unlock()
	return r
}

// pgCommitRig is the PostgreSQL rig: its store connects to storeDSN, and
// holds up on a connection of its own to dsn (the same database).
func pgCommitRig(t *testing.T, dsn, storeDSN string, opts Options) *commitRig {
	r := newCommitRig(t, opts, func(opts Options) *Store {
		s, err := Open(t.Context(), storeDSN, opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
	r.hold = func(t *testing.T) func() {
		db, err := sql.Open("pgx", dsn)
		if err != nil {
			t.Fatal(err)
		}
		tx, err := db.BeginTx(t.Context(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(`SELECT key FROM registrations WHERE key = 'blocker' FOR UPDATE`); err != nil {
			t.Fatal(err)
		}
		return func() { tx.Rollback(); db.Close() }
	}
	return r
}

// countingProxy relays TCP connections to the server of dsn and counts the
// reads of what its clients send, each one send or more; it returns dsn
// through the proxy.
func countingProxy(t *testing.T, dsn string) (string, *atomic.Int64) {
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	server := u.Host
	if !strings.Contains(server, ":") {
		server += ":5432"
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	sends := new(atomic.Int64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := net.Dial("tcp", server)
				if err != nil {
					return
				}
				defer up.Close()
				go func() { io.Copy(c, up); c.Close() }()
				buf := make([]byte, 64<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						sends.Add(1)
						if _, err := up.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	proxied := *u
	proxied.Host = ln.Addr().String()
	return proxied.String(), sends
}

// TestPipelinedBatchRoundTrips: on PostgreSQL a batch costs two round trips
// whatever its size (commit.go). A proxy between the store and the server
// counts what the store sends: a batch of 16 registrations, each with its
// operation, run one statement at a time, would take 2 x 16 + 2 sends.
func TestPipelinedBatchRoundTrips(t *testing.T) {
	dsn := os.Getenv("DPS_TEST_PG_DSN")
	if dsn == "" {
		t.Skip("no PostgreSQL server (DPS_TEST_PG_DSN)")
	}
	dsn = pgSchema(t, dsn)
	proxied, sends := countingProxy(t, dsn)
	r := pgCommitRig(t, dsn, proxied, Options{})
	// The committer's connection prepares its statements on first use.
	for i := range 3 {
		if o := r.save(fmt.Sprintf("warm-%d", i), "hub1", "", fmt.Sprintf("op-warm-%d", i))(); o.err != nil {
			t.Fatal(o.err)
		}
	}
	r.mu.Lock()
	r.sizes = nil
	r.mu.Unlock()
	const n = 16
	calls := make([]func() outcome, n)
	for i := range calls {
		calls[i] = r.save(fmt.Sprintf("dev-%02d", i), "hub1", "", fmt.Sprintf("op-%02d", i))
	}
	before := sends.Load()
	outs, blocker := r.heldBatch(t, calls...)
	got := sends.Load() - before
	for i, o := range append(outs, blocker) {
		if o.err != nil {
			t.Fatalf("call %d: %v", i, o.err)
		}
	}
	if b := r.batches(); !slices.Equal(b, []int{1, n}) {
		t.Fatalf("batches of %v writes, want [1 %d]", b, n)
	}
	for i := range n {
		r.wantStored(t, fmt.Sprintf("dev-%02d", i), "hub1")
		r.wantOperation(t, fmt.Sprintf("op-%02d", i), true)
	}
	// Two per batch; a connection idle for over a second may be pinged
	// when it is taken.
	if got < 4 || got > 6 {
		t.Fatalf("the store sent %d times for two batches, want 4 (at most 6)", got)
	}
}

func testRecord(id, hub string) *store.Registration {
	return &store.Registration{Result: &dps.DeviceRegistrationResult{RegistrationID: id, DeviceID: id, AssignedHub: hub, Status: dps.StatusAssigned}}
}

func testOperation(id, regID string) *store.Operation {
	return &store.Operation{ID: id, RegistrationID: regID, Status: dps.StatusAssigned, ExpiresAt: time.Now().Add(time.Hour)}
}

// outcome is what one call returned.
type outcome struct {
	rec *store.Registration
	err error
}

// heldBatch holds the committer up with a write of "blocker", submits
// each call in turn once the one before is queued, and lets go: the first
// batch holds the blocker, the second every call. It returns each call's
// outcome, in call order, and the blocker's.
func (r *commitRig) heldBatch(t *testing.T, calls ...func() outcome) (outs []outcome, blocker outcome) {
	t.Helper()
	release := r.hold(t)
	released := false
	defer func() {
		if !released {
			release()
		}
	}()
	c := r.s.commit
	// The committer of an earlier call may still be on its way out.
	waitFor(t, "the committer to be idle", func() bool { _, running := c.waiting(); return running == 0 })
	first := make(chan outcome, 1)
	go func() {
		rec, err := r.s.SaveRegistration(context.Background(), testRecord("blocker", "hub1"), "*", nil)
		first <- outcome{rec, err}
	}()
	waitFor(t, "the blocker's write to be taken", func() bool { q, running := c.waiting(); return q == 0 && running == 1 })
	outs = make([]outcome, len(calls))
	done := make(chan int, len(calls))
	for i, call := range calls {
		go func() {
			outs[i] = call()
			done <- i
		}()
		waitFor(t, fmt.Sprintf("call %d to queue", i), func() bool { q, _ := c.waiting(); return q == i+1 })
	}
	release()
	released = true
	for range calls {
		<-done
	}
	return outs, <-first
}

// waiting returns the writes in the queue and the committers running.
func (c *committer) waiting() (queue, running int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue), c.running
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func (r *commitRig) save(id, hub, ifMatch, opID string) func() outcome {
	return func() outcome {
		var op *store.Operation
		if opID != "" {
			op = testOperation(opID, id)
		}
		rec, err := r.s.SaveRegistration(context.Background(), testRecord(id, hub), ifMatch, op)
		return outcome{rec, err}
	}
}

// wantStored fails t unless the record of id is assigned to hub, or, with
// hub "", that there is none.
func (r *commitRig) wantStored(t *testing.T, id, hub string) *store.Registration {
	t.Helper()
	got, err := r.s.Registration(t.Context(), id)
	switch {
	case hub == "" && !errors.Is(err, store.ErrNotFound):
		t.Fatalf("registration %s: %v, want none", id, err)
	case hub == "":
	case err != nil:
		t.Fatalf("registration %s: %v", id, err)
	case got.Result.AssignedHub != hub:
		t.Fatalf("registration %s is on %s, want %s", id, got.Result.AssignedHub, hub)
	}
	return got
}

// wantOperation fails t unless operation id exists exactly when want.
func (r *commitRig) wantOperation(t *testing.T, id string, want bool) {
	t.Helper()
	_, err := r.s.Operation(t.Context(), id)
	if want && err != nil || !want && !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("operation %s: %v (want it stored: %v)", id, err, want)
	}
}

func TestGroupCommit(t *testing.T) {
	for engine, newRig := range commitRigs(t, Options{}) {
		t.Run(engine, func(t *testing.T) {
			t.Run("writes queued behind a commit commit together", func(t *testing.T) {
				r := newRig(t)
				const n = 10
				calls := make([]func() outcome, n)
				for i := range n {
					calls[i] = r.save(fmt.Sprintf("dev-%d", i), "hub1", "", fmt.Sprintf("op-%d", i))
				}
				calls = append(calls, func() outcome {
					err := r.s.PutOperation(context.Background(), testOperation("op-alone", "dev-alone"))
					return outcome{nil, err}
				})
				outs, blocker := r.heldBatch(t, calls...)
				if blocker.err != nil {
					t.Fatal(blocker.err)
				}
				for i, o := range outs {
					if o.err != nil {
						t.Fatalf("call %d: %v", i, o.err)
					}
				}
				if got := r.batches(); !slices.Equal(got, []int{1, n + 1}) {
					t.Fatalf("batches of %v writes, want [1 %d]", got, n+1)
				}
				for i := range n {
					got := r.wantStored(t, fmt.Sprintf("dev-%d", i), "hub1")
					if got.Result.Etag != outs[i].rec.Result.Etag {
						t.Fatalf("dev-%d: stored etag %s, returned %s", i, got.Result.Etag, outs[i].rec.Result.Etag)
					}
					r.wantOperation(t, fmt.Sprintf("op-%d", i), true)
				}
				r.wantOperation(t, "op-alone", true)
			})

			t.Run("writes of one record in one batch run one after another", func(t *testing.T) {
				r := newRig(t)
				outs, _ := r.heldBatch(t,
					r.save("Dev-X", "hub1", "", "op-1"),      // creates
					r.save("dev-x", "hub2", "", "op-2"),      // exists by now
					r.save("DEV-X", "hub3", "*", "op-3"),     // overwrites
					r.save("dev-x", "hub4", "bogus", "op-4"), // stale etag
				)
				if outs[0].err != nil || outs[2].err != nil {
					t.Fatalf("create: %v; overwrite: %v", outs[0].err, outs[2].err)
				}
				if !errors.Is(outs[1].err, store.ErrConflict) {
					t.Fatalf("second create: %v, want ErrConflict", outs[1].err)
				}
				if !errors.Is(outs[3].err, store.ErrPreconditionFailed) {
					t.Fatalf("stale etag: %v, want ErrPreconditionFailed", outs[3].err)
				}
				if got := r.batches(); !slices.Equal(got, []int{1, 2}) {
					t.Fatalf("batches of %v writes, want [1 2]", got)
				}
				got := r.wantStored(t, "dev-x", "hub3")
				first, last := outs[0].rec.Result, outs[2].rec.Result
				if got.Result.Etag != last.Etag || last.Etag == first.Etag ||
					!last.CreatedDateTimeUtc.Equal(first.CreatedDateTimeUtc.Time) {
					t.Fatalf("stored etag %s created %v; the overwrite returned %s %v, the create %s %v", got.Result.Etag,
						got.Result.CreatedDateTimeUtc, last.Etag, last.CreatedDateTimeUtc, first.Etag, first.CreatedDateTimeUtc)
				}
				for i, want := range []bool{true, false, true, false} {
					r.wantOperation(t, fmt.Sprintf("op-%d", i+1), want)
				}
			})

			t.Run("a write whose caller gives up while queued is not written", func(t *testing.T) {
				r := newRig(t)
				ctx, cancel := context.WithCancel(context.Background())
				gaveUp := make(chan struct{})
				outs, _ := r.heldBatch(t,
					r.save("dev-1", "hub1", "", "op-1"),
					func() outcome {
						_, err := r.s.SaveRegistration(ctx, testRecord("dev-2", "hub1"), "", testOperation("op-2", "dev-2"))
						close(gaveUp)
						return outcome{nil, err}
					},
					func() outcome {
						// dev-2's caller gives up, and its call returns, before
						// dev-3 queues and the committer is let go.
						cancel()
						<-gaveUp
						return r.save("dev-3", "hub1", "", "op-3")()
					},
				)
				if outs[0].err != nil || outs[2].err != nil {
					t.Fatalf("dev-1: %v; dev-3: %v", outs[0].err, outs[2].err)
				}
				if err := outs[1].err; !errors.Is(err, context.Canceled) || !errors.Is(err, errNotCommitted) {
					t.Fatalf("the call that gave up: %v, want context.Canceled, not committed", err)
				}
				r.wantStored(t, "dev-2", "")
				r.wantOperation(t, "op-2", false)
				r.wantStored(t, "dev-3", "hub1")
				if got := r.batches(); !slices.Equal(got, []int{1, 2}) {
					t.Fatalf("batches of %v writes, want [1 2]", got)
				}
			})

			// A write the database fails with an error of its own, not
			// declines: its statements run (and on PostgreSQL abort the
			// transaction) when it is sent, or cannot even be prepared (the
			// pipeline then runs the batch sequentially).
			notNull := stmt{what: "bad", query: `INSERT INTO operations (id, registration_id, status, created, expires) VALUES ('op-bad', NULL, 'x', 0, 0)`}
			noTable := stmt{what: "bad", query: `SELECT * FROM no_such_table`}
			for name, bad := range map[string]batchWrite{
				"its first statement fails when run":               {first: notNull},
				"it fails when run, after its record":              {then: func() ([]stmt, error) { return []stmt{notNull}, nil }},
				"it cannot be prepared, after its record":          {then: func() ([]stmt, error) { return []stmt{noTable}, nil }},
				"it fails before its statements, after its record": {then: func() ([]stmt, error) { return nil, errors.New("bad: no statements") }},
			} {
				t.Run("a write that fails is rolled back alone: "+name, func(t *testing.T) {
					r := newRig(t)
					failed := func() outcome {
						if bad.then != nil {
							var m meta
							bad.first, bad.scan = r.s.putStmt(registrationsT, "bad", "bad", []any{nil, "", "{}", nil, "", "", nil}, "", registrationEtag, &m)
						}
						return outcome{nil, r.s.batch(context.Background(), "bad", "registration/bad", bad)}
					}
					outs, _ := r.heldBatch(t,
						r.save("a", "hub1", "", "op-a"),
						failed,
						r.save("c", "hub1", "", "op-c"),
					)
					if outs[0].err != nil || outs[2].err != nil {
						t.Fatalf("a: %v; c: %v", outs[0].err, outs[2].err)
					}
					if err := outs[1].err; err == nil || errors.Is(err, store.ErrUnavailable) || !errors.Is(err, errNotCommitted) {
						t.Fatalf("the failing write: %v, want its own error, not committed", err)
					}
					r.wantStored(t, "bad", "")
					r.wantOperation(t, "op-bad", false)
					r.wantStored(t, "a", "hub1")
					r.wantStored(t, "c", "hub1")
					r.wantOperation(t, "op-a", true)
					r.wantOperation(t, "op-c", true)
					if got := r.batches(); !slices.Equal(got, []int{1, 2}) {
						t.Fatalf("batches of %v writes, want [1 2]", got)
					}
				})
			}
		})
	}
}

// TestGroupCommitDatabaseFailure: when the database fails during a batch,
// no write of it commits, and every caller is told so (not committed, so
// that a call's own retries may run it again).
func TestGroupCommitDatabaseFailure(t *testing.T) {
	for engine, newRig := range commitRigs(t, Options{Retries: -1}) {
		t.Run(engine, func(t *testing.T) {
			r := newRig(t)
			failing := func() outcome {
				err := r.s.batch(context.Background(), "sick", "registration/m", batchWrite{first: stmt{what: "sick", query: `SELECT 1`},
					scan: func(row scanner) error {
						var one int
						if err := row.Scan(&one); err != nil {
							return err
						}
						return r.s.fail(context.Background(), "sick", &pgconn.PgError{Code: "40001", Message: "could not serialize access"})
					}})
				return outcome{nil, err}
			}
			outs, _ := r.heldBatch(t, r.save("a", "hub1", "", "op-a"), failing, r.save("z", "hub1", "", "op-z"))
			for i, o := range outs {
				if !errors.Is(o.err, store.ErrUnavailable) || !errors.Is(o.err, errNotCommitted) {
					t.Fatalf("call %d: %v, want unavailable, not committed", i, o.err)
				}
			}
			r.wantStored(t, "a", "")
			r.wantStored(t, "z", "")
			r.wantOperation(t, "op-a", false)
			if got := r.batches(); !slices.Equal(got, []int{1}) {
				t.Fatalf("batches of %v writes, want [1]", got)
			}
		})
	}
}
