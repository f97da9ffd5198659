package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/store"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// fromDeviceReads answers a read of a device's enrollment or record (take
// says which) from the request's store.DeviceReads, making both reads in
// one round trip if they were not made yet; ok is false when the read is
// to be made by itself: on SQLite, which reads in process, without
// DeviceReads, or once the request's have been handed out.
func fromDeviceReads[T any](ctx context.Context, s *Store, registrationID string,
	take func(*store.DeviceReads, string) (T, bool, error)) (v T, ok bool, err error) {
	d := store.DeviceReadsFrom(ctx)
	if s.d != postgresDialect || d == nil {
		return v, false, nil
	}
	if v, ok, err = take(d, registrationID); ok || !d.Unused() {
		return v, ok, err
	}
	if err := s.readDevice(ctx, d, registrationID); err != nil {
		return v, true, err
	}
	v, _, err = take(d, registrationID)
	return v, true, err
}

// readDevice reads the individual enrollment and the registration record of
// registrationID in one round trip (a pipeline of the two lookups) and
// keeps them in d.
func (s *Store) readDevice(ctx context.Context, d *store.DeviceReads, registrationID string) error {
	return run0(ctx, s, lookup, func(ctx context.Context) error {
		conn, err := s.r.Conn(ctx)
		if err != nil {
			return s.readErr(ctx, "enrollment and registration", registrationID, err)
		}
		defer conn.Close()
		k := key(registrationID)
		var e *dps.IndividualEnrollment
		var r *store.Registration
		var eErr, rErr error
		err = conn.Raw(func(dc any) error {
			pc := dc.(*stdlib.Conn).Conn()
			b := &pgx.Batch{}
			b.Queue(qEnrollment, k)
			b.Queue(qRegistration, k)
			br := pc.SendBatch(ctx, b)
			var doc string
			var m meta
			if _, doc, m, eErr = scanDoc(br.QueryRow()); eErr == nil {
				e, eErr = decodeEnrollment(doc, m)
			}
			_, r, rErr = scanRegistration(br.QueryRow())
			// A failure of the batch itself fails both reads; the pool
			// drops a connection it lost.
			return br.Close()
		})
		if err != nil {
			return s.readErr(ctx, "enrollment and registration", registrationID, err)
		}
		d.Set(registrationID, e, s.readErr(ctx, "enrollment", registrationID, eErr),
			r, s.readErr(ctx, "registration", registrationID, rErr))
		return nil
	})
}

// readErr is the error of one lookup of a kind of record: ErrNotFound
// without a row.
func (s *Store) readErr(ctx context.Context, kind, registrationID string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("%s %q: %w", kind, registrationID, store.ErrNotFound)
	}
	return s.fail(ctx, fmt.Sprintf("%s %q", kind, registrationID), err)
}
