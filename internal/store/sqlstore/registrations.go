package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/store"
)

var registrationsT = newTable("registrations", "group_key", "group_id", "doc", "payload", "placement_hub", "placement_device_id", "applied_twin")

const (
	selectRegistration = `SELECT key, group_id, doc, payload, placement_hub, placement_device_id, applied_twin, etag, created, updated FROM registrations`
	selectOperation    = `SELECT id, registration_id, status, result, job, lease_until, created, expires FROM operations`
	upsertOperation    = `INSERT INTO operations (id, registration_id, status, result, job, lease_until, created, expires) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ` +
		`ON CONFLICT (id) DO UPDATE SET registration_id = excluded.registration_id, status = excluded.status, ` +
		`result = excluded.result, job = excluded.job, lease_until = excluded.lease_until, created = excluded.created, expires = excluded.expires`
	// claimOperation is a compare-and-set on the lease: of racing
	// claimers, the first to update the row wins, and the others find the
	// lease no longer expired.
	claimOperation = `UPDATE operations SET lease_until = $3 WHERE id = $1 AND job IS NOT NULL AND lease_until < $2 ` +
		`RETURNING id, registration_id, status, result, job, lease_until, created, expires`
	// deleteBatch bounds how long DeleteOperationsBefore holds SQLite's
	// write lock at a time, so that registrations are not stalled behind a
	// large purge.
	deleteBatch = 1000
)

func decodeResult(doc string, m meta) (*dps.DeviceRegistrationResult, error) {
	var r dps.DeviceRegistrationResult
	if err := json.Unmarshal([]byte(doc), &r); err != nil {
		return nil, fmt.Errorf("registration: corrupt record: %w", err)
	}
	r.Etag = m.etag
	r.CreatedDateTimeUtc = dps.NewTime(fromNanos(m.created))
	r.LastUpdatedDateTimeUtc = dps.NewTime(fromNanos(m.updated))
	return &r, nil
}

func scanRegistration(sc scanner) (k string, r *store.Registration, err error) {
	var groupID, doc string
	var payload []byte
	var twin sql.NullString
	var pl store.Placement
	var m meta
	if err := sc.Scan(&k, &groupID, &doc, &payload, &pl.Hub, &pl.DeviceID, &twin, &m.etag, &m.created, &m.updated); err != nil {
		return "", nil, err
	}
	res, err := decodeResult(doc, m)
	if err != nil {
		return "", nil, err
	}
	r = &store.Registration{Result: res, EnrollmentGroupID: groupID, DevicePayload: payload, Placement: pl}
	if twin.Valid {
		r.AppliedTwin = new(dps.InitialTwin)
		if err := json.Unmarshal([]byte(twin.String), r.AppliedTwin); err != nil {
			return "", nil, fmt.Errorf("registration: corrupt applied twin: %w", err)
		}
	}
	return k, r, nil
}

// Registration returns the registration record of a registration ID.
func (s *Store) Registration(ctx context.Context, registrationID string) (*store.Registration, error) {
	if r, ok, err := fromDeviceReads(ctx, s, registrationID, (*store.DeviceReads).TakeRegistration); ok {
		return r, err
	}
	return run(ctx, s, lookup, func(ctx context.Context) (*store.Registration, error) {
		what := fmt.Sprintf("registration %q", registrationID)
		_, r, err := scanRegistration(s.r.QueryRowContext(ctx, qRegistration, key(registrationID)))
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("%s: %w", what, store.ErrNotFound)
		}
		if err != nil {
			return nil, s.fail(ctx, what, err)
		}
		return r, nil
	})
}

// SaveRegistration writes r per ifMatch, the certificate it issued, and, if
// op is not nil, op with its Result set to the stored record, in one
// transaction, which it may share with other registration writes
// (commit.go). It returns the stored record once it is durable; r and op
// are not modified, nor read after it returns.
func (s *Store) SaveRegistration(ctx context.Context, r *store.Registration, ifMatch string, op *store.Operation) (*store.Registration, error) {
	return run(ctx, s, write, func(ctx context.Context) (*store.Registration, error) {
		if r == nil || r.Result == nil || r.Result.RegistrationID == "" {
			return nil, errors.New("registration: the registration ID is empty")
		}
		var row *operationRow
		if op != nil {
			o := *op
			o.Result = nil // the stored record's, below
			or, err := s.operationRow(&o)
			if err != nil {
				return nil, err
			}
			row = &or
		}
		k := key(r.Result.RegistrationID)
		what := fmt.Sprintf("registration %q", r.Result.RegistrationID)
		doc, cols, payload, err := registrationCols(r)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		// The stored result, but for what the write gives it (etag and
		// timestamps): decoded here, not in the transaction the batch shares.
		tmpl, err := decodeResult(doc, meta{})
		if err != nil {
			return nil, err
		}
		tmpl.IssuedCertificateChain, tmpl.IssuedClientCertificate = slices.Clone(r.Result.IssuedCertificateChain), r.Result.IssuedClientCertificate
		var issued []any
		if r.Issued != nil {
			if issued, err = s.newIssuedRow(r.Issued); err != nil {
				return nil, err
			}
		}
		// What the store returns besides the result; the payload is the
		// copy the columns hold. The certificates the registration delivers
		// go to the answer and the operation, not into the record.
		base := store.Registration{EnrollmentGroupID: r.EnrollmentGroupID, DevicePayload: payload, Placement: r.Placement, AppliedTwin: r.AppliedTwin.Clone()}
		var m meta
		var out *store.Registration
		first, scan := s.putStmt(registrationsT, what, k, cols, ifMatch, registrationEtag, &m)
		then := func() ([]stmt, error) {
			res := new(dps.DeviceRegistrationResult)
			*res = *tmpl
			res.Etag, res.CreatedDateTimeUtc, res.LastUpdatedDateTimeUtc = m.etag, dps.NewTime(fromNanos(m.created)), dps.NewTime(fromNanos(m.updated))
			stored := base
			stored.Result = res
			out = &stored
			var next []stmt
			if issued != nil {
				next = append(next, issuedStmt(issued))
			}
			if row == nil {
				return next, nil
			}
			o := *row
			var err error
			if o.result, err = resultColumn(res); err != nil {
				return nil, fmt.Errorf("operation %q: %w", o.id, err)
			}
			return append(next, o.stmt()), nil
		}
		err = s.batch(ctx, what, "registration/"+k, batchWrite{first: first, scan: scan, then: then})
		if err != nil {
			return nil, err
		}
		return out, nil
	})
}

// registrationCols returns the stored document of a record (the result
// without etag, timestamps and delivered certificates), the data columns
// of registrationsT, and the copy of the device's payload they hold.
func registrationCols(r *store.Registration) (string, []any, json.RawMessage, error) {
	c := *r.Result
	c.Etag, c.CreatedDateTimeUtc, c.LastUpdatedDateTimeUtc = "", nil, nil
	c.IssuedCertificateChain, c.IssuedClientCertificate = nil, ""
	doc, err := json.Marshal(&c)
	if err != nil {
		return "", nil, nil, err
	}
	var groupKey any // NULL for an individual enrollment, so RegistrationsByGroup("") finds nothing
	if r.EnrollmentGroupID != "" {
		groupKey = key(r.EnrollmentGroupID)
	}
	// Bytes, not text: the payload is kept exactly as the device sent it,
	// and PostgreSQL text would refuse invalid UTF-8. A copy: the caller
	// owns r again as soon as it stops waiting for the write.
	var payload json.RawMessage
	var payloadCol any
	if r.DevicePayload != nil {
		payload = slices.Clone(r.DevicePayload)
		payloadCol = []byte(payload)
	}
	var twin any // NULL when none
	if r.AppliedTwin != nil {
		b, err := json.Marshal(r.AppliedTwin)
		if err != nil {
			return "", nil, nil, fmt.Errorf("applied twin: %w", err)
		}
		twin = string(b)
	}
	return string(doc), []any{groupKey, r.EnrollmentGroupID, string(doc), payloadCol, r.Placement.Hub, r.Placement.DeviceID, twin}, payload, nil
}

// DeleteRegistration deletes a registration record per ifMatch. Its
// operations stay until they expire.
func (s *Store) DeleteRegistration(ctx context.Context, registrationID, ifMatch string) error {
	return run0(ctx, s, write, func(ctx context.Context) error {
		return s.remove(ctx, s.w, registrationsT, fmt.Sprintf("registration %q", registrationID), key(registrationID), ifMatch)
	})
}

// RegistrationsByGroup pages through the records of one enrollment group, in
// key order.
func (s *Store) RegistrationsByGroup(ctx context.Context, groupID, after string, limit int) (store.Page[*store.Registration], error) {
	return run(ctx, s, read, func(ctx context.Context) (store.Page[*store.Registration], error) {
		return s.registrationPage(ctx, fmt.Sprintf("registrations of group %q", groupID), qRegistrationsByGroup,
			[]any{key(groupID), key(after)}, limit)
	})
}

// registrationPage runs query, whose last parameter is the row limit, and
// decodes up to limit records (see page).
func (s *Store) registrationPage(ctx context.Context, what, query string, args []any, limit int) (store.Page[*store.Registration], error) {
	n := pageSize(limit)
	rows, err := s.r.QueryContext(ctx, query, append(args, n+1)...)
	if err != nil {
		return store.Page[*store.Registration]{}, s.fail(ctx, what, err)
	}
	defer rows.Close()
	var p store.Page[*store.Registration]
	var last string
	for rows.Next() {
		if len(p.Items) == n {
			p.Next = last
			break
		}
		k, r, err := scanRegistration(rows)
		if err != nil {
			return store.Page[*store.Registration]{}, s.fail(ctx, what, err)
		}
		p.Items = append(p.Items, r)
		last = k
	}
	if err := rows.Err(); err != nil {
		return store.Page[*store.Registration]{}, s.fail(ctx, what, err)
	}
	return p, nil
}

// Operation returns an operation by ID. Operation IDs are generated, and
// compared exactly.
func (s *Store) Operation(ctx context.Context, operationID string) (*store.Operation, error) {
	return run(ctx, s, lookup, func(ctx context.Context) (*store.Operation, error) {
		what := fmt.Sprintf("operation %q", operationID)
		op, err := scanOperation(s.r.QueryRowContext(ctx, qOperation, operationID))
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("%s: %w", what, store.ErrNotFound)
		}
		if err != nil {
			return nil, s.fail(ctx, what, err)
		}
		return op, nil
	})
}

func scanOperation(sc scanner) (*store.Operation, error) {
	var op store.Operation
	var result, job sql.NullString
	var lease, created, expires int64
	if err := sc.Scan(&op.ID, &op.RegistrationID, &op.Status, &result, &job, &lease, &created, &expires); err != nil {
		return nil, err
	}
	op.CreatedAt, op.ExpiresAt, op.LeaseUntil = fromNanos(created), fromNanos(expires), fromNanos(lease)
	if result.Valid {
		op.Result = new(dps.DeviceRegistrationResult)
		if err := json.Unmarshal([]byte(result.String), op.Result); err != nil {
			return nil, fmt.Errorf("operation %q: corrupt record: %w", op.ID, err)
		}
	}
	if job.Valid {
		op.Job = json.RawMessage(job.String)
	}
	return &op, nil
}

// ClaimOperation takes over an expired job (see store.Store).
func (s *Store) ClaimOperation(ctx context.Context, operationID string, now, leaseUntil time.Time) (*store.Operation, error) {
	return run(ctx, s, write, func(ctx context.Context) (*store.Operation, error) {
		what := fmt.Sprintf("operation %q", operationID)
		op, err := scanOperation(s.w.QueryRowContext(ctx, claimOperation, operationID, toNanos(now), toNanos(leaseUntil)))
		if err == nil {
			return op, nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return nil, s.fail(ctx, what, err)
		}
		var n int
		if err := s.w.QueryRowContext(ctx, `SELECT COUNT(*) FROM operations WHERE id = $1`, operationID).Scan(&n); err != nil {
			return nil, s.fail(ctx, what, err)
		}
		if n == 0 {
			return nil, fmt.Errorf("%s: %w", what, store.ErrNotFound)
		}
		return nil, fmt.Errorf("%s: no job, or its lease has not expired: %w", what, store.ErrPreconditionFailed)
	})
}

// ExpiredJobs lists the operations whose job's lease expired before now.
func (s *Store) ExpiredJobs(ctx context.Context, now time.Time, limit int) ([]*store.Operation, error) {
	return run(ctx, s, read, func(ctx context.Context) ([]*store.Operation, error) {
		return all(ctx, s, "expired jobs", qExpiredJobs, []any{toNanos(now), pageSize(limit)}, scanOperation)
	})
}

// PutOperation inserts or replaces an operation, in a transaction it may
// share with other registration writes (commit.go). CreatedAt defaults to
// now.
func (s *Store) PutOperation(ctx context.Context, op *store.Operation) error {
	return run0(ctx, s, write, func(ctx context.Context) error {
		if op == nil {
			return errors.New("operation: none given")
		}
		row, err := s.operationRow(op)
		if err != nil {
			return err
		}
		return s.batch(ctx, fmt.Sprintf("operation %q", op.ID), "operation/"+op.ID, batchWrite{first: row.stmt()})
	})
}

// operationRow is an operation as the values of its row, taken before the
// write joins a batch: the caller owns the operation again as soon as it
// stops waiting.
type operationRow struct {
	id, registrationID, status string
	result, job                any // NULL while assigning; NULL once terminal
	lease, created, expires    int64
}

// operationRow checks op and returns its row. CreatedAt defaults to now.
func (s *Store) operationRow(op *store.Operation) (operationRow, error) {
	if op.ID == "" {
		return operationRow{}, errors.New("operation: the ID is empty")
	}
	row := operationRow{id: op.ID, registrationID: op.RegistrationID, status: op.Status,
		lease: toNanos(op.LeaseUntil), created: toNanos(op.CreatedAt), expires: toNanos(op.ExpiresAt)}
	var err error
	if row.result, err = resultColumn(op.Result); err != nil {
		return operationRow{}, fmt.Errorf("operation %q: %w", op.ID, err)
	}
	if op.Job != nil {
		if !json.Valid(op.Job) {
			return operationRow{}, fmt.Errorf("operation %q: the job is not JSON", op.ID)
		}
		row.job = string(op.Job)
	}
	if row.created == 0 {
		row.created = s.stamp()
	}
	return row, nil
}

// resultColumn is the result column of an operation: NULL without one.
func resultColumn(r *dps.DeviceRegistrationResult) (any, error) {
	if r == nil {
		return nil, nil
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	return string(b), nil
}

// stmt is the statement that writes the operation.
func (o *operationRow) stmt() stmt {
	return stmt{what: fmt.Sprintf("operation %q", o.id), query: upsertOperation,
		args: []any{o.id, o.registrationID, o.status, o.result, o.job, o.lease, o.created, o.expires}}
}

// DeleteOperationsBefore removes the operations that expired before t, in
// batches, and returns how many it removed.
func (s *Store) DeleteOperationsBefore(ctx context.Context, t time.Time) (int, error) {
	total := 0
	for {
		n, err := s.deleteOperations(ctx, toNanos(t))
		total += n
		if err != nil || n < deleteBatch {
			return total, err
		}
	}
}

func (s *Store) deleteOperations(ctx context.Context, before int64) (int, error) {
	return run(ctx, s, write, func(ctx context.Context) (int, error) {
		res, err := s.w.ExecContext(ctx,
			qDeleteExpiredOperations,
			before, deleteBatch)
		if err != nil {
			return 0, s.fail(ctx, "delete expired operations", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return 0, s.fail(ctx, "delete expired operations", err)
		}
		return int(n), nil
	})
}
