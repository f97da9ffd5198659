package sqlstore

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/dpsd/dpsd/internal/store"
)

// Paging limits.
const (
	defaultPageSize = 100
	maxPageSize     = 1000
)

// key is the primary key of a case-insensitive ID.
func key(id string) string { return strings.ToLower(id) }

// bareEtag strips the surrounding double quotes clients may or may not send.
func bareEtag(s string) string { return strings.Trim(s, `"`) }

// newEtag returns an opaque value shaped like Azure's etags
// ("1a2b3c4d-0000-0000-0000-5e8fe3d10000" without the quotes, which the
// caller adds): 64 random bits and the time in seconds. It never returns
// old, so every write changes the etag even if the random bits repeat.
func newEtag(old string, now int64) string {
	for {
		var b [8]byte
		rand.Read(b[:])
		h := hex.EncodeToString(b[:])
		e := fmt.Sprintf("%s-%s-%s-0000-%08x0000", h[:8], h[8:12], h[12:], uint32(now/int64(time.Second)))
		if e != old {
			return e
		}
	}
}

// quoted is the etag of enrollments, groups, CAs, hubs and policies: the
// quotes are part of the value, as in Azure.
func quoted(bare string) string { return `"` + bare + `"` }

// registrationEtag is the etag of a registration record: Azure sends the
// base64 of a quoted etag.
func registrationEtag(old string, now int64) string {
	for {
		e := base64.StdEncoding.EncodeToString([]byte(quoted(newEtag("", now))))
		if e != old {
			return e
		}
	}
}

// toNanos converts t to Unix nanoseconds; the zero time becomes 0 and times
// out of int64 range are clamped rather than wrapped.
func toNanos(t time.Time) int64 {
	switch {
	case t.IsZero():
		return 0
	case t.Before(time.Unix(0, math.MinInt64)):
		return math.MinInt64 + 1
	case t.After(time.Unix(0, math.MaxInt64)):
		return math.MaxInt64
	}
	return t.UnixNano()
}

// fromNanos is the inverse of toNanos, in UTC.
func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// pageSize applies the default and the cap to a requested page size.
func pageSize(limit int) int {
	switch {
	case limit <= 0:
		return defaultPageSize
	case limit > maxPageSize:
		return maxPageSize
	}
	return limit
}

// meta is what the store maintains on every versioned record.
type meta struct {
	etag             string // as stored: bare for quoted kinds, base64 for registrations
	created, updated int64  // Unix nanoseconds
}

// table describes a versioned table: a primary key column "key", the data
// columns, and etag, created and updated. Its statements are built once.
type table struct {
	name string
	cols []string

	insert  string // create only
	upsert  string // create or overwrite
	update  string // overwrite if the etag matches
	restore string // create or overwrite with the given etag and timestamps
	del     string
	delIf   string
}

// newTable builds the write statements of a table. Parameters: $1 the key,
// $2.. the data columns, then the new etag, the time, and (update only) the
// expected etag; restore takes the etag, created and updated instead.
//
// A write never lets updated go backwards or stand still: a clock that steps
// back, or two writes within one tick, still leave the later write later.
func newTable(name string, cols ...string) *table {
	n := len(cols)
	ph := make([]string, n)
	set := make([]string, n)
	upd := make([]string, n)
	for i, c := range cols {
		ph[i] = fmt.Sprintf("$%d", i+2)
		set[i] = fmt.Sprintf("%s = excluded.%s", c, c)
		upd[i] = fmt.Sprintf("%s = $%d", c, i+2)
	}
	etagP, nowP, oldP := fmt.Sprintf("$%d", n+2), fmt.Sprintf("$%d", n+3), fmt.Sprintf("$%d", n+4)
	colList := "key, " + strings.Join(cols, ", ") + ", etag, created, updated"
	values := "$1, " + strings.Join(ph, ", ") + ", " + etagP + ", " + nowP + ", " + nowP
	t := &table{name: name, cols: cols}
	t.insert = fmt.Sprintf(`INSERT INTO %s (%s) VALUES (%s) ON CONFLICT (key) DO NOTHING RETURNING created, updated`,
		name, colList, values)
	t.upsert = fmt.Sprintf(`INSERT INTO %[1]s (%[2]s) VALUES (%[3]s) ON CONFLICT (key) DO UPDATE SET %[4]s, etag = excluded.etag, `+
		`updated = CASE WHEN excluded.updated > %[1]s.updated THEN excluded.updated ELSE %[1]s.updated + 100 END RETURNING created, updated`,
		name, colList, values, strings.Join(set, ", "))
	t.update = fmt.Sprintf(`UPDATE %[1]s SET %[2]s, etag = %[3]s, updated = CASE WHEN %[4]s > updated THEN %[4]s ELSE updated + 100 END `+
		`WHERE key = $1 AND etag = %[5]s RETURNING created, updated`,
		name, strings.Join(upd, ", "), etagP, nowP, oldP)
	t.restore = fmt.Sprintf(`INSERT INTO %[1]s (%[2]s) VALUES (%[3]s) ON CONFLICT (key) DO UPDATE SET %[4]s, `+
		`etag = excluded.etag, created = excluded.created, updated = excluded.updated`,
		name, colList, "$1, "+strings.Join(ph, ", ")+", "+etagP+", "+nowP+", "+oldP, strings.Join(set, ", "))
	t.del = fmt.Sprintf(`DELETE FROM %s WHERE key = $1`, name)
	t.delIf = fmt.Sprintf(`DELETE FROM %s WHERE key = $1 AND etag = $2`, name)
	return t
}

// put writes one row per ifMatch (see package store) and returns its meta.
// mkEtag makes the new etag from the expected one (when known), so that the
// new etag differs from it. what names the record in errors.
func (s *Store) put(ctx context.Context, q queryer, t *table, what, k string, vals []any, ifMatch string,
	mkEtag func(old string, now int64) string) (meta, error) {
	var m meta
	st, scan := s.putStmt(t, what, k, vals, ifMatch, mkEtag, &m)
	if err := scan(q.QueryRowContext(ctx, st.query, st.args...)); err != nil {
		if errors.As(err, new(refused)) {
			return meta{}, err
		}
		return meta{}, s.fail(ctx, what, err)
	}
	return m, nil
}

// putStmt is put as a statement and the function that reads its row into
// m: refused when the database declined the write, the row's error as it
// is otherwise.
func (s *Store) putStmt(t *table, what, k string, vals []any, ifMatch string,
	mkEtag func(old string, now int64) string, m *meta) (stmt, func(scanner) error) {
	now := s.stamp()
	var query string
	var old string
	switch ifMatch {
	case "":
		query = t.insert
	case "*":
		query = t.upsert
	default:
		query = t.update
		old = bareEtag(ifMatch)
	}
	etag := mkEtag(old, now)
	args := make([]any, 0, len(vals)+4)
	args = append(args, k)
	args = append(args, vals...)
	args = append(args, etag, now)
	if query == t.update {
		args = append(args, old)
	}
	scan := func(row scanner) error {
		*m = meta{etag: etag}
		err := row.Scan(&m.created, &m.updated)
		switch {
		case errors.Is(err, sql.ErrNoRows) && query == t.insert:
			return refused{fmt.Errorf("%s: %w", what, store.ErrConflict)}
		case errors.Is(err, sql.ErrNoRows):
			return refused{fmt.Errorf("%s: %w", what, store.ErrPreconditionFailed)}
		}
		return err
	}
	return stmt{what: what, query: query, args: args}, scan
}

// refused is a write the database declined without an error: a create of
// a key that exists, an update under an etag that no longer matches. It
// wrote nothing, and its transaction may go on (see commit.go).
type refused struct{ error }

func (r refused) Unwrap() error { return r.error }

// remove deletes one row per ifMatch: "" and "*" unconditionally, else only
// if the etag matches (ErrPreconditionFailed otherwise, also when the row
// does not exist, as for writes).
func (s *Store) remove(ctx context.Context, q queryer, t *table, what, k, ifMatch string) error {
	var res sql.Result
	var err error
	conditional := ifMatch != "" && ifMatch != "*"
	if conditional {
		res, err = q.ExecContext(ctx, t.delIf, k, bareEtag(ifMatch))
	} else {
		res, err = q.ExecContext(ctx, t.del, k)
	}
	if err != nil {
		return s.fail(ctx, what, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return s.fail(ctx, what, err)
	}
	switch {
	case n > 0:
		return nil
	case conditional:
		return fmt.Errorf("%s: %w", what, store.ErrPreconditionFailed)
	}
	return fmt.Errorf("%s: %w", what, store.ErrNotFound)
}
