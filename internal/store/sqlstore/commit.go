package sqlstore

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dpsd/dpsd/internal/store"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
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
// operation ID): nodes running batches at once then lock PostgreSQL's rows
// of records in one order, which makes deadlocks between them rare (a
// deadlock PostgreSQL breaks fails the batch, which is retried as below).
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
// On PostgreSQL a batch is pipelined: BEGIN and the first statement of
// every write (the record's) go in one round trip, the statements that
// depend on its row (the operation, which carries the record's times; the
// issued certificate) and COMMIT in a second. A batch then costs two round
// trips whatever its size, where running its statements one by one cost
// two per write and two more: the round trips, not the statements, were
// most of the database's CPU and of dpsd's system calls, and on a database
// across a network they would bound the committer's rate. COMMIT is sent
// with the second round trip's statements, so a connection lost before
// their answers leaves the batch's outcome unknown, as a lost COMMIT does.
//
// ClaimOperation and the management API's writes are not batched: they are
// rare next to registrations.

// maxBatch bounds the writes of one transaction, so that one commit holds
// SQLite's writer, and delays the first write's answer, only so long.
const maxBatch = 128

// A batched write's states: queued until a committer takes it, or dropped,
// by its caller giving up or by a committer finding its context done.
const (
	queued int32 = iota
	taken
	dropped
)

// batchWrite is what a batched write runs: its first statement, then, unless
// the database declined that one, the statements then returns. A write may
// run again, in a new transaction, when another write of its batch failed.
type batchWrite struct {
	first stmt
	// scan reads first's row and returns refused when the database
	// declined the write (which then wrote nothing), the row's error as it
	// is otherwise. It must call Scan once. nil: first returns no row and
	// cannot be declined.
	scan func(scanner) error
	// then returns the statements that follow first's, once scan has read
	// its row; nil when none do.
	then func() ([]stmt, error)
}

// stmt is one statement of a write.
type stmt struct {
	what  string // names the record in errors
	query string
	args  []any
}

// batched is one call's write in a batch.
type batched struct {
	ctx  context.Context // the call's: its deadline bounds the batch
	what string          // names the record in errors
	key  string          // the order of writes in a batch
	w    batchWrite

	state atomic.Int32
	done  chan struct{} // closed once err is set
	err   error
}

// committer queues the batched writes of a Store and runs them, one batch
// at a time. On PostgreSQL too: with a batch in two round trips, a second
// committer would only split the waiting writes into smaller batches, each
// costing the database the same round trips and fsync. Measured with 32
// kept-alive clients, one committer made batches of 8.5 writes and cost
// PostgreSQL 0.10-0.15 ms of CPU per registration, two made batches of 4.5
// and cost 0.13-0.20 ms, four 2.5 and 0.15-0.26 ms, with no more
// registrations per second.
type committer struct {
	s       *Store
	observe func(writes int) // Options.ObserveBatch

	mu      sync.Mutex
	queue   []*batched
	running int // 1 while the committer runs
}

// batch runs wr as part of a batch (see above) and returns once its
// outcome is durable, or the call's context is done. The caller must check
// its inputs before; what names the record in errors.
func (s *Store) batch(ctx context.Context, what, key string, wr batchWrite) error {
	if err := ctx.Err(); err != nil {
		return notCommitted{s.fail(ctx, what, err)}
	}
	w := &batched{ctx: ctx, what: what, key: key, w: wr, done: make(chan struct{})}
	c := s.commit
	c.mu.Lock()
	c.queue = append(c.queue, w)
	if c.running == 0 {
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
	if s.d == postgresDialect {
		errs, bad, err = c.pipelined(ctx, ws)
		if !errors.Is(err, errUnpipelined) {
			return errs, bad, err
		}
	}
	return c.sequential(ctx, ws)
}

// sequential is attempt with the writes' statements run one by one.
func (c *committer) sequential(ctx context.Context, ws []*batched) (errs []error, bad int, err error) {
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
		err := s.runWrite(stmtCtx, tx, w.w)
		switch {
		case err == nil:
			wrote = true
		case errors.As(err, new(refused)):
			errs[i] = err
		default:
			tx.Rollback()
			return s.writeFailed(ctx, errs, i, err)
		}
	}
	if !wrote {
		// Every write was declined: nothing to make durable.
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

// runWrite runs w's statements in tx one after another.
func (s *Store) runWrite(ctx context.Context, tx *txn, w batchWrite) error {
	var err error
	if w.scan != nil {
		err = w.scan(tx.QueryRowContext(ctx, w.first.query, w.first.args...))
	} else {
		_, err = tx.ExecContext(ctx, w.first.query, w.first.args...)
	}
	if err != nil {
		if errors.As(err, new(refused)) {
			return err
		}
		return s.fail(ctx, w.first.what, err)
	}
	if w.then == nil {
		return nil
	}
	next, err := w.then()
	if err != nil {
		return err
	}
	for _, st := range next {
		if _, err := tx.ExecContext(ctx, st.query, st.args...); err != nil {
			return s.fail(ctx, st.what, err)
		}
	}
	return nil
}

// pipelined is attempt on PostgreSQL, in two round trips (see above), on a
// connection of the writer pool used through pgx itself: database/sql has
// no pipelines.
func (c *committer) pipelined(ctx context.Context, ws []*batched) (errs []error, bad int, err error) {
	conn, err := c.s.w.Conn(ctx)
	if err != nil {
		return nil, -1, beginFailed{err}
	}
	defer conn.Close()
	ran := false
	rawErr := conn.Raw(func(dc any) error {
		ran = true
		pc := dc.(*stdlib.Conn).Conn()
		errs, bad, err = c.pipeline(ctx, pc, ws)
		if pc.PgConn().TxStatus() != 'I' {
			// Still in the transaction (its ROLLBACK failed): the pool
			// must not hand it out again (a lost one it drops by itself).
			return driver.ErrBadConn
		}
		return nil
	})
	if !ran {
		// The connection was closed before the batch began.
		return nil, -1, beginFailed{rawErr}
	}
	return errs, bad, err
}

// errUnpipelined: pgx could not prepare a statement of the batch, or
// encode its arguments, so none of it ran; which write's is not known. The
// batch then runs sequentially, which answers the write at fault alone.
var errUnpipelined = errors.New("the batch cannot be pipelined")

// pipeline runs ws in one transaction on pc and commits it, with attempt's
// results.
func (c *committer) pipeline(ctx context.Context, pc *pgx.Conn, ws []*batched) ([]error, int, error) {
	s := c.s
	// A failed transaction is rolled back before the connection goes back
	// to the pool; if that fails, pipelined discards the connection.
	rollback := func() { _, _ = pc.Exec(ctx, "ROLLBACK") }
	unpipelined := func(err error) bool {
		if errors.As(err, new(pgx.ErrPreprocessingBatch)) {
			rollback()
			return true
		}
		return false
	}

	// Round trip 1: BEGIN and each write's first statement. Nothing is
	// committed if any of it fails.
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	for _, w := range ws {
		b.Queue(w.w.first.query, w.w.first.args...)
	}
	br := pc.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		br.Close()
		if unpipelined(err) {
			return nil, -1, errUnpipelined
		}
		rollback()
		return nil, -1, beginFailed{err}
	}
	errs := make([]error, len(ws))
	wrote := false
	for i, w := range ws {
		var err error
		if w.w.scan != nil {
			err = w.w.scan(br.QueryRow())
		} else {
			_, err = br.Exec()
		}
		switch {
		case err == nil:
			wrote = true
			continue
		case errors.As(err, new(refused)):
			errs[i] = err
			continue
		}
		br.Close()
		rollback()
		return s.writeFailed(ctx, errs, i, s.fail(ctx, w.w.first.what, err))
	}
	if err := br.Close(); err != nil {
		rollback()
		return nil, -1, beginFailed{err}
	}
	if !wrote {
		// Every write was declined: nothing to make durable.
		rollback()
		return errs, -1, nil
	}

	// Round trip 2: what follows each first statement, and COMMIT.
	b = &pgx.Batch{}
	var next []stmt
	var owner []int // the write of each statement of next
	for i, w := range ws {
		if errs[i] != nil || w.w.then == nil {
			continue
		}
		more, err := w.w.then()
		if err != nil {
			rollback()
			return s.writeFailed(ctx, errs, i, err)
		}
		for _, st := range more {
			b.Queue(st.query, st.args...)
			next = append(next, st)
			owner = append(owner, i)
		}
	}
	b.Queue("COMMIT")
	br = pc.SendBatch(ctx, b)
	defer br.Close()
	for j, st := range next {
		if _, err := br.Exec(); err != nil {
			br.Close()
			if unpipelined(err) {
				return nil, -1, errUnpipelined
			}
			var pe *pgconn.PgError
			if !errors.As(err, &pe) {
				// COMMIT was sent with it and may have run: as when COMMIT
				// itself fails, the outcome is not known.
				rollback()
				return errs, -1, err
			}
			// The server refused the statement, and skipped COMMIT.
			rollback()
			return s.writeFailed(ctx, errs, owner[j], s.fail(ctx, st.what, err))
		}
	}
	_, err := br.Exec()
	return errs, -1, err
}

// writeFailed is attempt's result when write i failed otherwise than by
// the database declining it, with nothing committed: err is the database's
// failure, or the write's own.
func (s *Store) writeFailed(ctx context.Context, errs []error, i int, err error) ([]error, int, error) {
	if errors.Is(err, store.ErrUnavailable) || ctx.Err() != nil {
		return nil, i, err
	}
	errs[i] = err
	return errs, i, nil
}

// finish answers the write's caller.
func (w *batched) finish(err error) {
	w.err = err
	close(w.done)
}
