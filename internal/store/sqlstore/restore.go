package sqlstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/store"
)

// What `dpsd export` and `dpsd import` need beyond the everyday calls: a
// full listing of registration records, counts for progress, and writes
// that keep etags and timestamps.

// Registrations pages through every registration record, in key order.
func (s *Store) Registrations(ctx context.Context, after string, limit int) (store.Page[*store.Registration], error) {
	return run(ctx, s, read, func(ctx context.Context) (store.Page[*store.Registration], error) {
		return s.registrationPage(ctx, "registrations", qRegistrationsAfter, []any{key(after)}, limit)
	})
}

// Counts returns how many records of each kind the store holds.
func (s *Store) Counts(ctx context.Context) (*store.Counts, error) {
	return run(ctx, s, read, func(ctx context.Context) (*store.Counts, error) {
		var c store.Counts
		err := s.r.QueryRowContext(ctx, `SELECT
			(SELECT COUNT(*) FROM policies), (SELECT COUNT(*) FROM ca_certificates), (SELECT COUNT(*) FROM linked_hubs),
			(SELECT COUNT(*) FROM enrollment_groups), (SELECT COUNT(*) FROM enrollments),
			(SELECT COUNT(*) FROM registrations), (SELECT COUNT(*) FROM operations),
			(SELECT COUNT(*) FROM issuing_cas), (SELECT COUNT(*) FROM issued_certificates)`).
			Scan(&c.Policies, &c.CACertificates, &c.LinkedHubs, &c.Groups, &c.Enrollments, &c.Registrations, &c.Operations,
				&c.IssuingCAs, &c.IssuedCertificates)
		if err != nil {
			return nil, s.fail(ctx, "counts", err)
		}
		return &c, nil
	})
}

// Restore writes recs as given, in one transaction (see store.Store).
func (s *Store) Restore(ctx context.Context, recs []store.Record) error {
	return run0(ctx, s, write, func(ctx context.Context) error {
		// Everything that can be refused is checked before the transaction,
		// so that a bad record fails the batch without touching the database.
		rows, err := s.restoreRows(recs)
		if err != nil {
			return err
		}
		return s.inTx(ctx, "restore", func(tx *txn) error { return s.writeRestoreRows(ctx, tx, rows) })
	})
}

func (s *Store) restoreRows(recs []store.Record) ([]restoreRow, error) {
	rows := make([]restoreRow, 0, len(recs))
	now := s.stamp()
	for i := range recs {
		r, err := restoreRowOf(&recs[i], now)
		if err != nil {
			return nil, fmt.Errorf("restore: record %d: %w", i+1, err)
		}
		rows = append(rows, r)
	}
	return rows, nil
}

func (s *Store) writeRestoreRows(ctx context.Context, tx queryer, rows []restoreRow) error {
	config := false
	for _, r := range rows {
		if r.issued != nil {
			if _, err := tx.ExecContext(ctx, restoreIssued, r.issued...); err != nil {
				return s.fail(ctx, "restore "+r.what, err)
			}
			continue
		}
		config = config || r.t == groupsT || r.t == casT || r.t == hubsT
		args := append(append([]any{r.key}, r.cols...), r.etag, r.created, r.updated)
		if _, err := tx.ExecContext(ctx, r.t.restore, args...); err != nil {
			return s.fail(ctx, "restore "+r.what, err)
		}
		if r.group != nil {
			if err := s.writeGroupIndex(ctx, tx, "restore "+r.what, r.group); err != nil {
				return err
			}
		}
	}
	if config {
		return s.configChanged(ctx, tx)
	}
	return nil
}

// RestoreAll runs fn in one write transaction (see store.Store): on
// SQLite it holds the writer, so the node's other writes wait for it.
func (s *Store) RestoreAll(ctx context.Context, fn func(store.Restorer) error) error {
	if s.closed.Load() {
		return fmt.Errorf("restore: %w: the store is closed", store.ErrUnavailable)
	}
	tx, err := s.w.begin(ctx)
	if err != nil {
		return s.fail(ctx, "restore", err)
	}
	defer tx.end(ctx)
	if err := fn(&txRestorer{s: s, tx: tx}); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return s.fail(ctx, "restore: commit", err)
	}
	return nil
}

// txRestorer is the Restorer of RestoreAll.
type txRestorer struct {
	s  *Store
	tx *txn
}

func (r *txRestorer) Instance(ctx context.Context) (*store.Instance, error) {
	return r.s.instance(ctx, r.tx, "")
}

func (r *txRestorer) Restore(ctx context.Context, recs []store.Record) error {
	rows, err := r.s.restoreRows(recs)
	if err != nil {
		return err
	}
	return r.s.writeRestoreRows(ctx, r.tx, rows)
}

func (r *txRestorer) RestoreInstance(ctx context.Context, inst *store.Instance) error {
	return r.s.restoreInstance(ctx, r.tx, inst)
}

// restoreRow is one row to restore into table t.
type restoreRow struct {
	t                *table
	what             string
	key              string
	cols             []any
	etag             string // as stored
	created, updated int64
	group            *dps.EnrollmentGroup // a group, whose index rows are rewritten
	issued           []any                // an issued certificate: the arguments of restoreIssued
}

func restoreRowOf(rec *store.Record, now int64) (restoreRow, error) {
	var r restoreRow
	var etag string
	var created, updated time.Time
	set := 0
	if p := rec.Policy; p != nil {
		set++
		if p.Name == "" {
			return r, errors.New("a policy without a name")
		}
		cols, err := policyCols(p)
		if err != nil {
			return r, err
		}
		r = restoreRow{t: policiesT, what: fmt.Sprintf("policy %q", p.Name), key: key(p.Name), cols: cols}
		etag, created, updated = p.Etag, p.Created, p.Updated
	}
	if c := rec.CACertificate; c != nil {
		set++
		if c.Name == "" || len(c.CertificateDER) == 0 {
			return r, errors.New("a CA certificate without a name or certificate")
		}
		_, cols := caCols(c)
		r = restoreRow{t: casT, what: fmt.Sprintf("CA certificate %q", c.Name), key: key(c.Name), cols: cols}
		etag, created, updated = c.Etag, c.Created, c.Updated
	}
	if h := rec.LinkedHub; h != nil {
		set++
		if h.Name == "" {
			return r, errors.New("a linked hub without a name")
		}
		r = restoreRow{t: hubsT, what: fmt.Sprintf("linked hub %q", h.Name), key: key(h.Name), cols: hubCols(h)}
		etag, created, updated = h.Etag, h.Created, h.Updated
	}
	if e := rec.Enrollment; e != nil {
		set++
		if e.RegistrationID == "" {
			return r, errors.New("an enrollment without a registration ID")
		}
		doc, err := recordDoc(e)
		if err != nil {
			return r, err
		}
		r = restoreRow{t: enrollmentsT, what: fmt.Sprintf("enrollment %q", e.RegistrationID), key: key(e.RegistrationID), cols: []any{string(doc)}}
		etag, created, updated = e.Etag, dpsTime(e.CreatedDateTimeUtc), dpsTime(e.LastUpdatedDateTimeUtc)
	}
	if g := rec.Group; g != nil {
		set++
		if g.EnrollmentGroupID == "" {
			return r, errors.New("an enrollment group without an ID")
		}
		doc, err := recordDoc(g)
		if err != nil {
			return r, err
		}
		r = restoreRow{t: groupsT, what: fmt.Sprintf("enrollment group %q", g.EnrollmentGroupID), key: key(g.EnrollmentGroupID),
			cols: groupCols(g, doc), group: g}
		etag, created, updated = g.Etag, dpsTime(g.CreatedDateTimeUtc), dpsTime(g.LastUpdatedDateTimeUtc)
	}
	if reg := rec.Registration; reg != nil {
		set++
		if reg.Result == nil || reg.Result.RegistrationID == "" {
			return r, errors.New("a registration record without a registration ID")
		}
		_, cols, _, err := registrationCols(reg)
		if err != nil {
			return r, err
		}
		r = restoreRow{t: registrationsT, what: fmt.Sprintf("registration %q", reg.Result.RegistrationID),
			key: key(reg.Result.RegistrationID), cols: cols}
		// A registration etag is stored as sent: base64 of a quoted value.
		r.etag = reg.Result.Etag
		if r.etag == "" {
			r.etag = registrationEtag("", now)
		}
		created, updated = dpsTime(reg.Result.CreatedDateTimeUtc), dpsTime(reg.Result.LastUpdatedDateTimeUtc)
	}
	if c := rec.IssuingCA; c != nil {
		set++
		what, cols, err := issuingCACols(c)
		if err != nil {
			return r, err
		}
		r = restoreRow{t: issuingCAsT, what: what, key: key(c.Name), cols: cols}
		etag, created, updated = c.Etag, c.Created, c.Updated
	}
	if c := rec.IssuedCertificate; c != nil {
		set++
		args, err := issuedRow(c, now)
		if err != nil {
			return r, err
		}
		if set != 1 {
			return restoreRow{}, fmt.Errorf("a record must hold exactly one item, not %d", set)
		}
		return restoreRow{what: fmt.Sprintf("issued certificate %s", c.SerialNumber), issued: args}, nil
	}
	if set != 1 {
		return restoreRow{}, fmt.Errorf("a record must hold exactly one item, not %d", set)
	}
	if r.t != registrationsT {
		r.etag = bareEtag(etag)
		if r.etag == "" {
			r.etag = newEtag("", now)
		}
	}
	r.created, r.updated = toNanos(created), toNanos(updated)
	if r.created == 0 {
		r.created = now
	}
	if r.updated == 0 {
		r.updated = r.created
	}
	return r, nil
}

func dpsTime(t *dps.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.Time
}

// RestoreInstance creates or replaces the instance with inst, ID scope,
// creation time and server CA included.
func (s *Store) RestoreInstance(ctx context.Context, inst *store.Instance) error {
	return run0(ctx, s, write, func(ctx context.Context) error {
		return s.inTx(ctx, "instance", func(tx *txn) error { return s.restoreInstance(ctx, tx, inst) })
	})
}

func (s *Store) restoreInstance(ctx context.Context, q queryer, inst *store.Instance) error {
	if inst == nil || inst.IDScope == "" {
		return errors.New("instance: the ID scope is empty")
	}
	doc, err := json.Marshal(instanceToDoc(inst))
	if err != nil {
		return fmt.Errorf("instance: %w", err)
	}
	created := toNanos(inst.CreatedAt.UTC())
	if created == 0 {
		created = s.stamp()
	}
	_, err = q.ExecContext(ctx, `INSERT INTO instance (id, id_scope, doc, created) VALUES (1, $1, $2, $3) `+
		`ON CONFLICT (id) DO UPDATE SET id_scope = excluded.id_scope, doc = excluded.doc, created = excluded.created`,
		inst.IDScope, string(doc), created)
	if err != nil {
		return s.fail(ctx, "instance", err)
	}
	return s.configChanged(ctx, q)
}

// SchemaVersions returns the schema version of the database (0 before the
// first migration) and the version this binary writes.
func (s *Store) SchemaVersions(ctx context.Context) (current, latest int, err error) {
	current, err = run(ctx, s, read, func(ctx context.Context) (int, error) {
		v, err := schemaVersion(ctx, s.r)
		if err != nil && missingTable(err) {
			return 0, nil
		}
		if err != nil {
			return 0, s.fail(ctx, "schema version", err)
		}
		return v, nil
	})
	return current, SchemaVersion(), err
}
