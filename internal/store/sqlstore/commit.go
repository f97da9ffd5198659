package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dpsd/dpsd/internal/store"
)

// Group commit. A durable commit costs an fsync on SQLite (one writer,
// synchronous=FULL) and a WAL flush plus round trips on PostgreSQL, and
// registrations arriving together would queue for them one by one. So the
// writes of the registration path (SaveRegistration: a record, the
// certificate the registration issued, its operation; and PutOperation,
// which a job's "assigning" operation and a disabled enrollment's outcome
// use) go to a committer: it takes every write waiting when it becomes free
// (no pause to gather more: what queued while the last commit was being
// made durable, up to maxBatch), runs them one after another in one
// transaction, commits once, and only then answers each caller. A device
// still hears "assigned" only after its record is durable.
//
// Writes run in the order of their keys (the registration ID, the
// operation ID): committers and nodes running batches at once then mostly
// lock PostgreSQL's rows of records in one order, which makes deadlocks
// between them rare (a registration also writes its operation, so the
// order is not total; a deadlock PostgreSQL breaks fails the batch, which
// is retried as below).
// Writes of one key keep their arrival order; those of overlapping calls
// may run in either order, as they could without batching.
//
// A write the database declines (a create of a record that exists, an etag
// that no longer matches: refused) has written nothing, and the batch
// carries on. Any other failure of one write rolls the transaction back,
// answers that write with its error, and runs the rest again without it
// (rare: inputs are checked before they are queued). That, rather than a
// savepoint around each write, because a savepoint costs PostgreSQL two
// more round trips per write. A failure of the database itself fails every
// write of the batch, marked as not committed when it came before COMMIT,
// so that each call's own retries (run) apply as they would to a call of
// its own.
//
// ClaimOperation and the management API's writes are not batched: they are
// rare next to registrations.

// maxBatch bounds the writes of one transaction, so that one commit holds
// SQLite's writer, and delays the first write's answer, only so long.
const maxBatch = 128

// postgresCommitters bounds the transactions of batched writes a node runs
// at once on PostgreSQL: round trips are sequential within a transaction,
// so a few committers keep the database busy while each batch waits for its
// commit. A quarter of the connection pool at most, so that reads always
// find connections.
const postgresCommitters = 4

// A batched write's states: queued until a committer takes it, or dropped,
// by its caller giving up or by a committer finding its context done.
const (
	queued int32 = iota
	taken
	dropped
)

// batched is one call's write in a batch.
type batched struct {
	ctx  context.Context // the call's: its deadline bounds the batch
	what string          // names the record in errors
	key  string          // the order of writes in a batch
	// exec runs the write's statements in tx. It may run again, in a new
	// transaction, when another write of its batch failed.
	exec func(ctx context.Context, tx *txn) error

	state atomic.Int32
	done  chan struct{} // closed once err is set
	err   error
}

// committer queues the batched writes of a Store and runs them.
type committer struct {
	s       *Store
	max     int              // committers running at once
	observe func(writes int) // Options.ObserveBatch

	mu      sync.Mutex
	queue   []*batched
	running int
}

// batch runs exec as part of a batch (see above) and returns once its
// outcome is durable, or the call's context is done. exec must check its
// inputs before; what names the record in errors.
func (s *Store) batch(ctx context.Context, what, key string, exec func(ctx context.Context, tx *txn) error) error {
	if err := ctx.Err(); err != nil {
		return notCommitted{s.fail(ctx, what, err)}
	}
	w := &batched{ctx: ctx, what: what, key: key, exec: exec, done: make(chan struct{})}
	c := s.commit
	c.mu.Lock()
	c.queue = append(c.queue, w)
	if c.running < c.max {
		c.running++
		go c.loop()
	}
	c.mu.Unlock()
	select {
	case <-w.done:
		return w.err
	case <-ctx.Done():
	}
	select {
	case <-w.done: // answered meanwhile
		return w.err
	default:
	}
	if w.state.CompareAndSwap(queued, dropped) || w.state.Load() == dropped {
		return notCommitted{s.fail(ctx, what, ctx.Err())}
	}
	// In a transaction already, which may still commit: as when a call
	// gives up during its COMMIT, the caller does not know.
	return s.fail(ctx, what, ctx.Err())
}

// loop runs batches until the queue is empty.
func (c *committer) loop() {
	for {
		ws := c.take()
		if ws == nil {
			return
		}
		c.run(ws)
	}
}

// take removes up to maxBatch writes from the queue, drops those whose
// caller is gone, and returns the others; nil when none are left, after
// which the loop ends.
func (c *committer) take() []*batched {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.queue) > 0 {
		var ws []*batched
		i := 0
		for ; i < len(c.queue) && len(ws) < maxBatch; i++ {
			w := c.queue[i]
			if w.ctx.Err() != nil {
				w.state.CompareAndSwap(queued, dropped)
				continue
			}
			if w.state.CompareAndSwap(queued, taken) {
				ws = append(ws, w)
			}
		}
		n := copy(c.queue, c.queue[i:])
		clear(c.queue[n:])
		c.queue = c.queue[:n]
		if len(ws) > 0 {
			return ws
		}
	}
	c.running--
	return nil
}

// run commits a batch and answers its writes.
func (c *committer) run(ws []*batched) {
	s := c.s
	slices.SortStableFunc(ws, func(a, b *batched) int { return strings.Compare(a.key, b.key) })
	// The batch may take as long as the most patient of its callers.
	deadline := time.Now().Add(s.timeout)
	if d, ok := ws[0].ctx.Deadline(); ok {
		deadline = d
	}
	for _, w := range ws[1:] {
		if d, ok := w.ctx.Deadline(); ok && d.After(deadline) {
			deadline = d
		}
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()

	for len(ws) > 0 {
		errs, bad, err := c.attempt(ctx, ws)
		switch {
		case bad >= 0 && err == nil:
			// One write failed: the others run again without it.
			ws[bad].finish(notCommitted{errs[bad]})
			ws = slices.Delete(ws, bad, bad+1)
			continue
		case bad >= 0:
			// The database failed during a write: none committed.
			for i, w := range ws {
				if i == bad {
					w.finish(notCommitted{err})
				} else {
					w.finish(notCommitted{fmt.Errorf("%s: in one transaction with %w", w.what, err)})
				}
			}
		case err != nil:
			// BEGIN or COMMIT failed, err says which.
			for _, w := range ws {
				w.finish(c.batchErr(ctx, w.what, err))
			}
		default:
			if wrote := countNil(errs); wrote > 0 && c.observe != nil {
				c.observe(wrote)
			}
			for i, w := range ws {
				w.finish(errs[i])
			}
		}
		return
	}
}

// beginFailed marks a batch whose transaction did not start; other errors
// of attempt without a failed write are COMMIT's.
type beginFailed struct{ error }

func (e beginFailed) Unwrap() error { return e.error }

// batchErr is the error of one write of a batch whose BEGIN or COMMIT
// failed.
func (c *committer) batchErr(ctx context.Context, what string, err error) error {
	var b beginFailed
	if errors.As(err, &b) {
		return notCommitted{c.s.fail(ctx, what, b.error)}
	}
	return c.s.fail(ctx, what, err)
}

// attempt runs ws in one transaction and commits it. errs holds each
// write's refusal, if the database declined it. When a write failed
// otherwise, bad is its index and nothing was committed; err is then the
// database's failure if it was one, nil if the write's own. Without a
// failed write (bad < 0), err is that of BEGIN (beginFailed) or COMMIT.
func (c *committer) attempt(ctx context.Context, ws []*batched) (errs []error, bad int, err error) {
	s := c.s
	tx, err := s.w.begin(ctx)
	if err != nil {
		return nil, -1, beginFailed{err}
	}
	defer tx.end(ctx)
	// On SQLite the writes' statements run without cancellation (Store.ctx
	// says what it costs): BEGIN IMMEDIATE took the writer's lock, so they
	// wait for nothing, and the transaction still ends with ctx.
	stmtCtx := ctx
	if s.d == sqliteDialect {
		stmtCtx = context.WithoutCancel(ctx)
	}
	errs = make([]error, len(ws))
	wrote := false
	for i, w := range ws {
		err := w.exec(stmtCtx, tx)
		var r refused
		switch {
		case err == nil:
			wrote = true
		case errors.As(err, &r):
			errs[i] = err
		default:
			tx.Rollback()
			if errors.Is(err, store.ErrUnavailable) || ctx.Err() != nil {
				return nil, i, err
			}
			errs[i] = err
			return errs, i, nil
		}
	}
	if !wrote {
		// Every write was refused: nothing to make durable.
		tx.Rollback()
		return errs, -1, nil
	}
	return errs, -1, tx.Commit()
}

func countNil(errs []error) int {
	n := 0
	for _, err := range errs {
		if err == nil {
			n++
		}
	}
	return n
}

// finish answers the write's caller.
func (w *batched) finish(err error) {
	w.err = err
	close(w.done)
}
