package sqlstore

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/dpsd/dpsd/internal/store"
	"github.com/dpsd/dpsd/internal/wait"
)

// Retries of transient failures.
const (
	// DefaultRetries is how many times a store call is retried after a
	// transient failure (Options.Retries).
	DefaultRetries = 3
	retryBase      = 20 * time.Millisecond
	retryMax       = time.Second
)

// callKind says how a store call is retried and bounded.
type callKind int

const (
	// read only reads: retried after a transient failure.
	read callKind = iota
	// write could have committed when its connection was lost in the
	// middle of the call, so it is retried only when it cannot have.
	write
	// lookup is a read of one row by a unique key, made for every
	// registration: on SQLite it is not bounded by the query timeout (see
	// Store.ctx).
	lookup
)

// run is one store call: it is bounded by the query timeout, retried after
// transient failures (see retriable), and reported to the health tracker.
func run[T any](ctx context.Context, s *Store, kind callKind, fn func(ctx context.Context) (T, error)) (T, error) {
	ctx, cancel := s.ctx(ctx, kind)
	defer cancel()
	var v T
	var err error
	for attempt := 0; ; attempt++ {
		v, err = fn(ctx)
		if err == nil || attempt >= s.retries || !s.retriable(ctx, err, kind) {
			break
		}
		s.log.Debug("retrying a store call after a transient database error", "attempt", attempt+1, "err", err)
		if wait.Sleep(ctx, backoff(attempt)) != nil {
			break
		}
	}
	s.health.observe(err)
	return v, err
}

// run0 is run for calls that return only an error.
func run0(ctx context.Context, s *Store, kind callKind, fn func(ctx context.Context) error) error {
	_, err := run(ctx, s, kind, func(ctx context.Context) (struct{}, error) { return struct{}{}, fn(ctx) })
	return err
}

// retriable reports whether a failed call may be run again. Only failures
// that mean "the database could not do it now" qualify, and only when the
// first attempt cannot have taken effect: the server refused the statement
// (a serialization failure, a deadlock, a shutdown), the transaction failed
// before its COMMIT was sent, nothing was sent at all, or the call only
// reads. A write whose connection broke while its statement or COMMIT was in
// flight may have committed, so it is not repeated: the caller gets
// ErrUnavailable and decides (a device retries its registration, which is
// idempotent). SQLite is never retried: it already waits for locks for its
// busy timeout, and its other failures do not go away in milliseconds.
func (s *Store) retriable(ctx context.Context, err error, kind callKind) bool {
	if s.d != postgresDialect || s.closed.Load() || ctx.Err() != nil || !errors.Is(err, store.ErrUnavailable) ||
		errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		// The server answered: the statement, and its transaction, did not
		// commit. fail mapped only transient codes to ErrUnavailable.
		return true
	}
	return kind != write || errors.Is(err, errNotCommitted) || pgconn.SafeToRetry(err)
}

// errNotCommitted marks a failure inside a transaction before its COMMIT
// was sent (see inTx): the transaction certainly did not commit.
var errNotCommitted = errors.New("transaction not committed")

type notCommitted struct{ err error }

func (e notCommitted) Error() string        { return e.err.Error() }
func (e notCommitted) Unwrap() error        { return e.err }
func (e notCommitted) Is(target error) bool { return target == errNotCommitted }

// backoff is the pause before retry attempt+1: exponential with jitter.
func backoff(attempt int) time.Duration {
	d := min(retryBase<<attempt, retryMax)
	return d/2 + rand.N(d/2+1)
}

// healthLogEvery bounds how often an outage is logged: once when it starts,
// then a reminder at most this often, then once when it ends.
const healthLogEvery = 30 * time.Second

// health turns the outcome of store calls into a few log lines: the first
// failure to reach the database, reminders while it lasts, and recovery.
// Requests keep failing with 503 meanwhile; the log does not grow with
// them.
type health struct {
	log  *slog.Logger
	now  func() time.Time
	down atomic.Bool // fast path for the common case

	mu       sync.Mutex
	since    time.Time // start of the outage
	lastLog  time.Time // last outage line
	logged   bool      // this outage was logged, so its end is too
	failures int       // failed calls since the last line
}

// observe records the outcome of one call.
func (h *health) observe(err error) {
	switch {
	case err == nil || !errors.Is(err, store.ErrUnavailable):
		if h.down.Load() {
			h.up()
		}
	case isContention(err):
		// A deadlock or serialization failure that outlived the retries is
		// contention, not an outage.
	default:
		h.fail(err)
	}
}

func (h *health) fail(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.now()
	if !h.down.Load() {
		h.down.Store(true)
		h.since, h.logged, h.failures = now, false, 0
	}
	h.failures++
	switch {
	case !h.logged && now.Sub(h.lastLog) >= healthLogEvery:
		// Usually the first failure; later when the last outage was logged
		// less than healthLogEvery ago (a flapping database).
		attrs := []any{"err", err}
		if d := now.Sub(h.since); d >= time.Second {
			attrs = append(attrs, "for", d.Round(time.Second).String())
		}
		h.log.Error("database unavailable: requests fail with 503 until it answers again", attrs...)
	case h.logged && now.Sub(h.lastLog) >= healthLogEvery:
		h.log.Warn("database still unavailable", "for", now.Sub(h.since).Round(time.Second).String(),
			"failedCalls", h.failures, "err", err)
	default:
		return
	}
	h.lastLog, h.logged, h.failures = now, true, 0
}

func (h *health) up() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.down.Load() {
		return
	}
	h.down.Store(false)
	if h.logged {
		h.log.Info("database available again", "after", h.now().Sub(h.since).Round(time.Millisecond).String(),
			"failedCalls", h.failures)
	}
	h.failures = 0
}

// isContention reports a deadlock or serialization failure.
func isContention(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}
