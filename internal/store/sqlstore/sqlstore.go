// Package sqlstore implements store.Store on SQLite (modernc.org/sqlite, pure
// Go) and PostgreSQL (pgx through database/sql) with one SQL text: both
// engines accept $n placeholders, INSERT ... ON CONFLICT ... DO UPDATE with
// excluded, and RETURNING. The few differences live in a dialect.
//
// Records are kept as JSON documents of the dps models next to the columns
// the store maintains (key, etag, created, updated) and the columns lookups
// need. The document never holds the etag or timestamps: the columns are the
// truth and are copied into the model on read, so that a single upsert can
// keep the creation time without reading the row first.
//
// SQLite allows one writer at a time, so writes go through a pool of exactly
// one connection that begins transactions with BEGIN IMMEDIATE, and reads go
// through a separate pool; in WAL mode readers never wait for the writer.
// Registration writes arriving together share a transaction and its commit
// on both engines (commit.go).
//
// On PostgreSQL several dpsd nodes share one database. The store keeps
// nothing outside it, so every call sees what any node committed. Every
// call runs through run (retry.go): bounded by Options.QueryTimeout,
// retried after transient failures where that is safe, and reported to a
// health tracker that logs an outage once rather than once per call.
package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/dpsd/dpsd/internal/store"
	"github.com/dpsd/dpsd/internal/wait"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	_ "modernc.org/sqlite"             // registers the "sqlite" driver
)

var _ store.Store = (*Store)(nil)

// Defaults of Options.
const (
	DefaultMaxOpenConns    = 20
	DefaultConnMaxLifetime = 30 * time.Minute
	DefaultQueryTimeout    = 10 * time.Second
	// sqliteBusyTimeout bounds how long a connection waits for a lock held
	// by another process (or a checkpoint) before reporting SQLITE_BUSY.
	sqliteBusyTimeout = 5 * time.Second
)

// Options tune a Store. The zero value is usable.
type Options struct {
	// Now is the clock that stamps records; time.Now when nil.
	Now func() time.Time
	// Logger receives migration and startup messages; discarded when nil.
	Logger *slog.Logger
	// MaxOpenConns bounds the PostgreSQL connection pool
	// (DefaultMaxOpenConns when <= 0). SQLite sizes its read pool from
	// GOMAXPROCS and always writes through one connection.
	MaxOpenConns int
	// ConnMaxLifetime recycles PostgreSQL connections, so that a fail-over
	// or a load balancer change is picked up (DefaultConnMaxLifetime when
	// <= 0).
	ConnMaxLifetime time.Duration
	// QueryTimeout bounds each store call, including the wait for a pooled
	// connection or for SQLite's writer (DefaultQueryTimeout when <= 0). A
	// call that runs out of time fails with store.ErrUnavailable.
	QueryTimeout time.Duration
	// Retries is how many times a call is retried after a transient
	// PostgreSQL failure: a serialization failure or deadlock, a server
	// restart, a lost connection when that cannot have committed anything
	// (DefaultRetries when 0, none when negative). The retries share the
	// call's QueryTimeout.
	Retries int
	// SkipMigrate makes Open refuse a database whose schema is behind this
	// binary instead of migrating it; `dpsd migrate` then calls Migrate.
	SkipMigrate bool
	// SkipSchemaCheck makes Open neither migrate nor check the schema, for
	// `dpsd migrate`, which reports the versions before migrating.
	SkipSchemaCheck bool
	// ObserveBatch, when set, is called after each commit of batched
	// registration writes (commit.go) with the number of writes it made
	// durable.
	ObserveBatch func(writes int)
}

// Store is a store.Store on SQLite or PostgreSQL. It is safe for concurrent
// use.
type Store struct {
	d       *dialect
	r       *pool // reads
	w       *pool // writes; the same pool as r on PostgreSQL
	now     func() time.Time
	log     *slog.Logger
	timeout time.Duration
	retries int
	health  *health
	commit  *committer // registration writes, batched
	closed  atomic.Bool
}

// dialect holds what differs between the engines.
type dialect struct {
	name string // "sqlite" or "postgres"
	// Key is the column type of lower-cased IDs. PostgreSQL compares text
	// by the database's locale unless told otherwise; "C" gives byte order
	// on both engines, so pages are the same everywhere and cheap to compare.
	Key string
	// Blob is the column type of raw bytes.
	Blob string
	// forUpdate locks a row read inside a transaction. SQLite needs none:
	// its writer transactions are BEGIN IMMEDIATE and serialized.
	forUpdate string
	// advisoryLock makes Migrate take pg_advisory_lock, so that several
	// nodes starting together migrate once.
	advisoryLock bool
}

// JSONText is the SQL expression of a top-level string member of a JSON
// document column (NULL when absent), for migrations that derive a column
// from the documents.
func (d *dialect) JSONText(col, member string) string {
	if d.name == "postgres" {
		return fmt.Sprintf("(%s::jsonb ->> '%s')", col, member)
	}
	return fmt.Sprintf("json_extract(%s, '$.%s')", col, member)
}

var (
	sqliteDialect   = &dialect{name: "sqlite", Key: "TEXT", Blob: "BLOB"}
	postgresDialect = &dialect{name: "postgres", Key: `TEXT COLLATE "C"`, Blob: "BYTEA", forUpdate: " FOR UPDATE", advisoryLock: true}
)

// Open connects to the database named by dsn and migrates it (see
// Options.SkipMigrate). dsn is a file path, sqlite:PATH or file:PATH for
// SQLite, or a postgres:// or postgresql:// URL for PostgreSQL.
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	s := &Store{
		now:     opts.Now,
		log:     opts.Logger,
		timeout: opts.QueryTimeout,
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if s.timeout <= 0 {
		s.timeout = DefaultQueryTimeout
	}
	switch s.retries = opts.Retries; {
	case s.retries == 0:
		s.retries = DefaultRetries
	case s.retries < 0:
		s.retries = 0
	}
	s.health = &health{log: s.log, now: time.Now}

	var err error
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		err = s.openPostgres(dsn, opts)
	} else {
		err = s.openSQLite(ctx, dsn)
	}
	if err != nil {
		return nil, err
	}
	s.commit = &committer{s: s, observe: opts.ObserveBatch}

	switch {
	case opts.SkipSchemaCheck:
	case opts.SkipMigrate:
		err = s.checkSchema(ctx)
	default:
		err = s.Migrate(ctx)
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) openPostgres(dsn string, opts Options) error {
	s.d = postgresDialect
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		// The error may quote the DSN, password included.
		return errors.New("sqlstore: invalid PostgreSQL URL")
	}
	n := opts.MaxOpenConns
	if n <= 0 {
		n = DefaultMaxOpenConns
	}
	life := opts.ConnMaxLifetime
	if life <= 0 {
		life = DefaultConnMaxLifetime
	}
	db.SetMaxOpenConns(n)
	db.SetMaxIdleConns(n)
	db.SetConnMaxLifetime(life)
	db.SetConnMaxIdleTime(5 * time.Minute)
	s.r = newPool(db, false) // pgx prepares and caches statements itself (stmts.go)
	s.w = s.r
	s.log.Info("opened PostgreSQL store", "target", redactURL(dsn), "max_open_conns", n)
	return nil
}

func (s *Store) openSQLite(ctx context.Context, dsn string) error {
	s.d = sqliteDialect
	path, query, _ := strings.Cut(dsn, "?")
	path = strings.TrimPrefix(path, "sqlite:")
	path = strings.TrimPrefix(path, "file:")
	extra, err := url.ParseQuery(query)
	if err != nil {
		return fmt.Errorf("sqlstore: SQLite DSN %q: %v", dsn, err)
	}
	// The read and write pools would each get their own in-memory database.
	if path == "" || path == ":memory:" || extra.Get("mode") == "memory" {
		return fmt.Errorf("sqlstore: SQLite needs a file, not %q", dsn)
	}
	if err := createSQLiteFile(path); err != nil {
		return err
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		s.log.Warn("the database holds private keys but other users can read it",
			"path", path, "mode", fi.Mode().Perm().String())
	}

	common := url.Values{}
	common.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", sqliteBusyTimeout.Milliseconds()))
	for k, vs := range extra {
		for _, v := range vs {
			common.Add(k, v)
		}
	}
	if err := useWAL(ctx, path, common); err != nil {
		return err
	}
	common.Add("_pragma", "journal_mode(WAL)")
	common.Add("_pragma", "foreign_keys(1)")

	wq := cloneValues(common)
	// A registration acknowledged to a device must survive a power cut.
	wq.Add("_pragma", "synchronous(FULL)")
	wq.Set("_txlock", "immediate")
	w, err := sql.Open("sqlite", path+"?"+wq.Encode())
	if err != nil {
		return fmt.Errorf("sqlstore: open %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)

	rq := cloneValues(common)
	rq.Add("_pragma", "query_only(1)")
	r, err := sql.Open("sqlite", path+"?"+rq.Encode())
	if err != nil {
		w.Close()
		return fmt.Errorf("sqlstore: open %s: %w", path, err)
	}
	n := max(4, runtime.GOMAXPROCS(0))
	r.SetMaxOpenConns(n)
	r.SetMaxIdleConns(n)
	r.SetConnMaxLifetime(0)

	s.r, s.w = newPool(r, true), newPool(w, true)
	s.log.Info("opened SQLite store", "path", path)
	return nil
}

// useWAL puts the database file in WAL mode, which it keeps. SQLite
// switches a new file's journal mode in a transaction that reads and then
// writes, and it does not wait for the busy timeout when that upgrade finds
// another connection's lock (waiting could deadlock): processes opening a new
// file together would see SQLITE_BUSY at once. So the switch is made here on
// its own connection, and retried until the busy timeout has passed.
func useWAL(ctx context.Context, path string, q url.Values) error {
	db, err := sql.Open("sqlite", path+"?"+q.Encode())
	if err != nil {
		return fmt.Errorf("sqlstore: open %s: %w", path, err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	deadline := time.Now().Add(sqliteBusyTimeout)
	for attempt := 0; ; attempt++ {
		var mode string
		err = db.QueryRowContext(ctx, `PRAGMA journal_mode=WAL`).Scan(&mode)
		switch {
		case err == nil && strings.EqualFold(mode, "wal"):
			return nil
		case err == nil:
			// SQLite keeps the old mode when it cannot switch: a read-only
			// file, or a file system without shared memory.
			return fmt.Errorf("sqlstore: %s cannot use a write-ahead log: SQLite kept journal mode %q", path, mode)
		case !busy(err) || time.Now().After(deadline):
			return fmt.Errorf("sqlstore: open %s: %w: %w", path, store.ErrUnavailable, err)
		}
		if wait.Sleep(ctx, backoff(min(attempt, 3))) != nil {
			return fmt.Errorf("sqlstore: open %s: %w", path, ctx.Err())
		}
	}
}

// createSQLiteFile creates the database file (and its directory) readable by
// the owner only before SQLite does, because SQLite would create it 0644 and
// it holds private keys. SQLite gives the -wal and -shm files the mode of the
// database file.
func createSQLiteFile(path string) error {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("sqlstore: %w", err)
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("sqlstore: %w", err)
	}
	return f.Close()
}

func cloneValues(v url.Values) url.Values {
	c := make(url.Values, len(v))
	for k, vs := range v {
		c[k] = append([]string(nil), vs...)
	}
	return c
}

// redactURL returns a PostgreSQL URL without its password, for logs.
func redactURL(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "postgres://(unparsable)"
	}
	return u.Redacted()
}

// RedactDSN returns dsn fit for messages: a PostgreSQL URL without its
// password, a SQLite path as it is.
func RedactDSN(dsn string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		return redactURL(dsn)
	}
	return dsn
}

// Engine returns "sqlite" or "postgres".
func (s *Store) Engine() string { return s.d.name }

// Ping checks that the database answers now: it is not retried, and a
// success ends an outage the store had logged.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := s.ctx(ctx, read)
	defer cancel()
	err := s.ping(ctx)
	s.health.observe(err)
	return err
}

func (s *Store) ping(ctx context.Context) error {
	if err := s.r.PingContext(ctx); err != nil {
		return s.fail(ctx, "ping", err)
	}
	if s.w != s.r {
		if err := s.w.PingContext(ctx); err != nil {
			return s.fail(ctx, "ping", err)
		}
	}
	return nil
}

// Close closes the database. Calls after Close fail with
// store.ErrUnavailable.
func (s *Store) Close() error {
	s.closed.Store(true)
	err := s.r.Close()
	if s.w != s.r {
		// Closing the writer last lets SQLite checkpoint the WAL into the
		// database file and remove it.
		err = errors.Join(err, s.w.Close())
	}
	return err
}

// ctx bounds one store call by the query timeout, except a lookup on
// SQLite: modernc.org/sqlite starts a goroutine to interrupt each
// statement run with a context that can end, which cost a lookup about 40 %
// of its CPU, and bought it nothing. A lookup reads a few pages through an
// index, and readers of a WAL database never wait for a lock, so it ends
// in microseconds; its wait for one of the pool's connections ends when
// the calls holding them do, which are bounded (a lookup, or a call under
// the timeout).
func (s *Store) ctx(ctx context.Context, kind callKind) (context.Context, context.CancelFunc) {
	if kind == lookup && s.d == sqliteDialect {
		return context.WithoutCancel(ctx), func() {}
	}
	return context.WithTimeout(ctx, s.timeout)
}

// stamp returns the store's time in the 100 ns resolution DPS prints, so that
// what a write returns equals what a later read returns.
func (s *Store) stamp() int64 {
	return toNanos(s.now().UTC().Truncate(100 * time.Nanosecond))
}

// queryer is what *sql.DB, *sql.Conn and *sql.Tx share.
type queryer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// inTx runs fn in a write transaction and commits it if fn succeeds. fn's
// errors are returned as they are; what names the call in the others.
// Failures before COMMIT are marked as not committed, so that run may retry
// them even when the connection broke.
func (s *Store) inTx(ctx context.Context, what string, fn func(tx *txn) error) error {
	tx, err := s.w.begin(ctx)
	if err != nil {
		return notCommitted{s.fail(ctx, what, err)}
	}
	defer tx.end(ctx)
	if err := fn(tx); err != nil {
		tx.Rollback()
		return notCommitted{err}
	}
	if err := tx.Commit(); err != nil {
		return s.fail(ctx, what, err)
	}
	return nil
}
