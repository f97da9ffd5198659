package sqlstore

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/dpsd/dpsd/internal/store"
)

const (
	selectRefusal = `SELECT id, at, transport, operation, registration_id, credential, status, error_code, reason, tracking_id, peer FROM refusals`
	insertRefusal = `INSERT INTO refusals (id, at, transport, operation, registration_id, registration_key, credential, status, error_code, reason, tracking_id, peer) ` +
		`VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (id) DO NOTHING`
	// The oldest entry the count bound keeps: the keep-th newest.
	qRefusalCutoff = `SELECT at, id FROM refusals ORDER BY at DESC, id DESC LIMIT 1 OFFSET $1`
	// Deletes run in batches of deleteBatch, oldest first, so that SQLite's
	// write lock is never held for long (see DeleteOperationsBefore).
	qDeleteRefusalsBefore = `DELETE FROM refusals WHERE id IN (SELECT id FROM refusals WHERE at < $1 ORDER BY at LIMIT $2)`
	qDeleteRefusalsUpTo   = `DELETE FROM refusals WHERE id IN (SELECT id FROM refusals WHERE (at, id) < ($1, $2) ORDER BY at, id LIMIT $3)`
)

// AddRefusals appends entries to the journal in one transaction. The IDs
// are chosen before the first attempt, so that a retry after a commit whose
// outcome was lost inserts nothing twice.
func (s *Store) AddRefusals(ctx context.Context, rs []*store.Refusal) error {
	if len(rs) == 0 {
		return nil
	}
	now := s.stamp()
	rows := make([][]any, len(rs))
	for i, r := range rs {
		if r == nil {
			return fmt.Errorf("refusal %d is nil", i+1)
		}
		at := toNanos(r.Time)
		if at == 0 {
			at = now
		}
		rows[i] = []any{refusalID(), at, r.Transport, r.Operation, r.RegistrationID, key(r.RegistrationID),
			r.Credential, r.Status, r.ErrorCode, r.Reason, r.TrackingID, r.Peer}
	}
	return run0(ctx, s, write, func(ctx context.Context) error {
		return s.inTx(ctx, "add refusals", func(tx *txn) error {
			st, err := tx.PrepareContext(ctx, insertRefusal)
			if err != nil {
				return s.fail(ctx, "add refusals", err)
			}
			defer st.Close()
			for _, args := range rows {
				if _, err := st.ExecContext(ctx, args...); err != nil {
					return s.fail(ctx, "add refusals", err)
				}
			}
			return nil
		})
	})
}

// refusalID is 128 random bits in hex.
func refusalID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Refusals pages through the journal newest first. Page.Next is the time
// and ID of the page's last entry, "NANOS.ID".
func (s *Store) Refusals(ctx context.Context, f store.RefusalFilter, after string, limit int) (store.Page[*store.Refusal], error) {
	q, args, err := refusalQuery(f, after)
	if err != nil {
		return store.Page[*store.Refusal]{}, err
	}
	return run(ctx, s, read, func(ctx context.Context) (store.Page[*store.Refusal], error) {
		n := pageSize(limit)
		var p store.Page[*store.Refusal]
		rows, err := s.r.QueryContext(ctx, q+` ORDER BY at DESC, id DESC LIMIT $`+strconv.Itoa(len(args)+1), append(args, n+1)...)
		if err != nil {
			return p, s.fail(ctx, "refusals", err)
		}
		defer rows.Close()
		for rows.Next() {
			if len(p.Items) == n {
				last := p.Items[n-1]
				p.Next = strconv.FormatInt(toNanos(last.Time), 10) + "." + last.ID
				break
			}
			var r store.Refusal
			var at int64
			if err := rows.Scan(&r.ID, &at, &r.Transport, &r.Operation, &r.RegistrationID, &r.Credential,
				&r.Status, &r.ErrorCode, &r.Reason, &r.TrackingID, &r.Peer); err != nil {
				return store.Page[*store.Refusal]{}, s.fail(ctx, "refusals", err)
			}
			r.Time = fromNanos(at)
			p.Items = append(p.Items, &r)
		}
		if err := rows.Err(); err != nil {
			return store.Page[*store.Refusal]{}, s.fail(ctx, "refusals", err)
		}
		return p, nil
	})
}

// refusalQuery is the SELECT of the entries f selects after the position
// after, without its ORDER BY and LIMIT. Only the conditions in use are in
// the text, so that each query can use its index.
func refusalQuery(f store.RefusalFilter, after string) (string, []any, error) {
	var conds []string
	var args []any
	// add appends a condition whose ? are the next placeholders.
	add := func(cond string, vs ...any) {
		for _, v := range vs {
			args = append(args, v)
			cond = strings.Replace(cond, "?", "$"+strconv.Itoa(len(args)), 1)
		}
		conds = append(conds, cond)
	}
	if f.RegistrationID != "" {
		add("registration_key = ?", key(f.RegistrationID))
	}
	if f.ErrorCode != 0 {
		add("error_code = ?", f.ErrorCode)
	}
	if !f.Since.IsZero() {
		add("at >= ?", toNanos(f.Since))
	}
	if !f.Until.IsZero() {
		add("at < ?", toNanos(f.Until))
	}
	if after != "" {
		ns, id, ok := strings.Cut(after, ".")
		at, err := strconv.ParseInt(ns, 10, 64)
		if !ok || err != nil || id == "" {
			return "", nil, fmt.Errorf("refusals: position %q: %w", after, store.ErrBadPosition)
		}
		add("(at, id) < (?, ?)", at, id)
	}
	q := selectRefusal
	if len(conds) > 0 {
		q += " WHERE " + strings.Join(conds, " AND ")
	}
	return q, args, nil
}

// TrimRefusals deletes the entries older than before, then the oldest
// beyond the newest keep, in batches.
func (s *Store) TrimRefusals(ctx context.Context, keep int, before time.Time) (int, error) {
	total := 0
	for !before.IsZero() {
		n, err := s.deleteRefusals(ctx, "trim refusals by age", qDeleteRefusalsBefore, toNanos(before), deleteBatch)
		total += n
		if err != nil {
			return total, err
		}
		if n < deleteBatch {
			break
		}
	}
	if keep <= 0 {
		return total, nil
	}
	type cutoff struct {
		at    int64
		id    string
		found bool
	}
	c, err := run(ctx, s, read, func(ctx context.Context) (cutoff, error) {
		var c cutoff
		err := s.r.QueryRowContext(ctx, qRefusalCutoff, keep-1).Scan(&c.at, &c.id)
		if errors.Is(err, sql.ErrNoRows) {
			return c, nil
		}
		if err != nil {
			return c, s.fail(ctx, "trim refusals by count", err)
		}
		c.found = true
		return c, nil
	})
	if err != nil || !c.found {
		return total, err
	}
	for {
		n, err := s.deleteRefusals(ctx, "trim refusals by count", qDeleteRefusalsUpTo, c.at, c.id, deleteBatch)
		total += n
		if err != nil || n < deleteBatch {
			return total, err
		}
	}
}

func (s *Store) deleteRefusals(ctx context.Context, what, q string, args ...any) (int, error) {
	return run(ctx, s, write, func(ctx context.Context) (int, error) {
		res, err := s.w.ExecContext(ctx, q, args...)
		if err != nil {
			return 0, s.fail(ctx, what, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return 0, s.fail(ctx, what, err)
		}
		return int(n), nil
	})
}
