package sqlstore

import (
	"context"
	"database/sql"
	"sync"
)

// Prepared statements. modernc.org/sqlite compiles a query's SQL every time
// it runs unless the query was prepared, and a loaded server spent a tenth
// of its CPU in SQLite's parser. So SQLite's pools run every query as a
// prepared statement, prepared once per connection and kept for the life of
// the pool. pgx keeps such a cache of its own on every PostgreSQL
// connection (its default query mode prepares each new query once and
// reuses it), so PostgreSQL's pool passes queries through.

// maxStatements bounds the statements a pool keeps. The store's queries are
// constants, with a few variants (the refusal journal's filters); a query
// beyond the bound runs unprepared.
const maxStatements = 256

// pool is a *sql.DB whose queries run as prepared statements when cache is
// set. Everything else is the *sql.DB's.
type pool struct {
	*sql.DB
	cache bool

	mu    sync.RWMutex
	stmts map[string]*sql.Stmt
}

func newPool(db *sql.DB, cache bool) *pool {
	return &pool{DB: db, cache: cache, stmts: map[string]*sql.Stmt{}}
}

// cached returns the statement of query if the pool prepared it.
func (p *pool) cached(query string) *sql.Stmt {
	if !p.cache {
		return nil
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.stmts[query]
}

// stmt returns the statement of query, preparing it the first time; nil
// when the pool keeps none (the query then runs unprepared, and reports
// its own errors). The caller must not hold one of the pool's connections:
// preparing takes one.
func (p *pool) stmt(ctx context.Context, query string) *sql.Stmt {
	if !p.cache {
		return nil
	}
	if st := p.cached(query); st != nil {
		return st
	}
	p.mu.RLock()
	full := len(p.stmts) >= maxStatements
	p.mu.RUnlock()
	if full {
		return nil
	}
	// Prepared without the lock: preparing waits for a connection.
	st, err := p.DB.PrepareContext(ctx, query)
	if err != nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if prev := p.stmts[query]; prev != nil {
		st.Close()
		return prev
	}
	p.stmts[query] = st
	return st
}

func (p *pool) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := p.stmt(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return p.DB.ExecContext(ctx, query, args...)
}

func (p *pool) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := p.stmt(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return p.DB.QueryContext(ctx, query, args...)
}

func (p *pool) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := p.stmt(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return p.DB.QueryRowContext(ctx, query, args...)
}

// begin starts a transaction on the pool.
func (p *pool) begin(ctx context.Context) (*txn, error) {
	tx, err := p.DB.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	return &txn{Tx: tx, p: p}, nil
}

// txn is a transaction whose queries use the pool's prepared statements.
// A transaction holds its connection, and SQLite's writer pool has only
// that one, so a statement the pool has not prepared yet cannot be
// prepared through the pool inside it: the transaction prepares it for
// itself (an import runs a few statements a million times in one), and
// end prepares it in the pool once the connection is free again.
type txn struct {
	*sql.Tx
	p     *pool
	local map[string]*sql.Stmt // the statements of this transaction
}

func (t *txn) stmt(ctx context.Context, query string) *sql.Stmt {
	if !t.p.cache {
		return nil
	}
	if st := t.local[query]; st != nil {
		return st
	}
	if len(t.local) >= maxStatements {
		return nil
	}
	// The transaction's own handle of the pool's statement, or one it
	// prepares; kept, because each handle lives until the transaction ends.
	var st *sql.Stmt
	if ps := t.p.cached(query); ps != nil {
		st = t.Tx.StmtContext(ctx, ps)
	} else {
		var err error
		if st, err = t.Tx.PrepareContext(ctx, query); err != nil {
			return nil
		}
	}
	if t.local == nil {
		t.local = map[string]*sql.Stmt{}
	}
	t.local[query] = st
	return st
}

func (t *txn) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := t.stmt(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return t.Tx.ExecContext(ctx, query, args...)
}

func (t *txn) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := t.stmt(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return t.Tx.QueryContext(ctx, query, args...)
}

func (t *txn) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := t.stmt(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return t.Tx.QueryRowContext(ctx, query, args...)
}

// end prepares in the pool the statements the transaction prepared for
// itself, once it committed or rolled back (which closed its handles).
func (t *txn) end(ctx context.Context) {
	for q := range t.local {
		t.p.stmt(ctx, q)
	}
	t.local = nil
}
