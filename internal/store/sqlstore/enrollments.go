package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/store"
)

var (
	enrollmentsT = newTable("enrollments", "doc")
	groupsT      = newTable("enrollment_groups", "attestation_type", "doc")
)

const (
	selectEnrollment  = `SELECT key, doc, etag, created, updated FROM enrollments`
	selectGroup       = `SELECT key, doc, etag, created, updated FROM enrollment_groups`
	symmetricKeyLower = "symmetrickey" // lower(dps.AttestationSymmetricKey)
)

func decodeEnrollment(doc string, m meta) (*dps.IndividualEnrollment, error) {
	return decodeDoc[dps.IndividualEnrollment]("enrollment", doc, m)
}

func decodeGroup(doc string, m meta) (*dps.EnrollmentGroup, error) {
	return decodeDoc[dps.EnrollmentGroup]("enrollment group", doc, m)
}

// decodeDoc reads a stored document (see recordDoc) back, with the etag and
// timestamps of its columns.
func decodeDoc[T any, P dps.EnrollmentPtr[T]](what, doc string, m meta) (P, error) {
	v := P(new(T))
	if err := json.Unmarshal([]byte(doc), v); err != nil {
		return nil, fmt.Errorf("%s: corrupt record: %w", what, err)
	}
	s := v.Settings()
	s.Etag = quoted(m.etag)
	s.CreatedDateTimeUtc = dps.NewTime(fromNanos(m.created))
	s.LastUpdatedDateTimeUtc = dps.NewTime(fromNanos(m.updated))
	return v, nil
}

// getDoc reads the one document query selects by key k.
func getDoc[T any](ctx context.Context, s *Store, what, query, k string, decode func(doc string, m meta) (T, error)) (T, error) {
	_, doc, m, err := scanDoc(s.r.QueryRowContext(ctx, query, k))
	if errors.Is(err, sql.ErrNoRows) {
		var none T
		return none, fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	if err != nil {
		var none T
		return none, s.fail(ctx, what, err)
	}
	return decode(doc, m)
}

// scanDoc reads the columns key, doc, etag, created, updated.
func scanDoc(sc interface{ Scan(...any) error }) (k, doc string, m meta, err error) {
	err = sc.Scan(&k, &doc, &m.etag, &m.created, &m.updated)
	return k, doc, m, err
}

// Enrollment returns the individual enrollment of a registration ID.
func (s *Store) Enrollment(ctx context.Context, registrationID string) (*dps.IndividualEnrollment, error) {
	if e, ok, err := fromDeviceReads(ctx, s, registrationID, (*store.DeviceReads).TakeEnrollment); ok {
		return e, err
	}
	return run(ctx, s, lookup, func(ctx context.Context) (*dps.IndividualEnrollment, error) {
		return getDoc(ctx, s, fmt.Sprintf("enrollment %q", registrationID), qEnrollment, key(registrationID), decodeEnrollment)
	})
}

// PutEnrollment writes e per ifMatch and returns it as stored. e is not
// modified.
func (s *Store) PutEnrollment(ctx context.Context, e *dps.IndividualEnrollment, ifMatch string) (*dps.IndividualEnrollment, error) {
	return run(ctx, s, write, func(ctx context.Context) (*dps.IndividualEnrollment, error) {
		if e == nil || e.RegistrationID == "" {
			return nil, errors.New("enrollment: the registration ID is empty")
		}
		what := fmt.Sprintf("enrollment %q", e.RegistrationID)
		doc, err := recordDoc(e)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		m, err := s.put(ctx, s.w, enrollmentsT, what, key(e.RegistrationID), []any{string(doc)}, ifMatch, newEtag)
		if err != nil {
			return nil, err
		}
		return decodeEnrollment(string(doc), m)
	})
}

// DeleteEnrollment deletes the enrollment of a registration ID per ifMatch.
func (s *Store) DeleteEnrollment(ctx context.Context, registrationID, ifMatch string) error {
	return run0(ctx, s, write, func(ctx context.Context) error {
		return s.remove(ctx, s.w, enrollmentsT, fmt.Sprintf("enrollment %q", registrationID), key(registrationID), ifMatch)
	})
}

// Enrollments returns a page of enrollments in key order.
func (s *Store) Enrollments(ctx context.Context, after string, limit int) (store.Page[*dps.IndividualEnrollment], error) {
	return run(ctx, s, read, func(ctx context.Context) (store.Page[*dps.IndividualEnrollment], error) {
		return page(ctx, s, "enrollments", qEnrollmentsAfter,
			[]any{key(after)}, limit, decodeEnrollment)
	})
}

// page runs query, whose last parameter is the row limit, and decodes up to
// limit rows. It asks for one row more than it returns, to know whether a
// next page exists without a second query.
func page[T any](ctx context.Context, s *Store, what, query string, args []any, limit int,
	decode func(doc string, m meta) (T, error)) (store.Page[T], error) {
	n := pageSize(limit)
	rows, err := s.r.QueryContext(ctx, query, append(args, n+1)...)
	if err != nil {
		return store.Page[T]{}, s.fail(ctx, what, err)
	}
	defer rows.Close()
	var p store.Page[T]
	var last string
	for rows.Next() {
		if len(p.Items) == n {
			p.Next = last
			break
		}
		k, doc, m, err := scanDoc(rows)
		if err != nil {
			return store.Page[T]{}, s.fail(ctx, what, err)
		}
		v, err := decode(doc, m)
		if err != nil {
			return store.Page[T]{}, err
		}
		p.Items = append(p.Items, v)
		last = k
	}
	if err := rows.Err(); err != nil {
		return store.Page[T]{}, s.fail(ctx, what, err)
	}
	return p, nil
}

// list runs query and decodes every row.
func list[T any](ctx context.Context, s *Store, what, query string, args []any,
	decode func(doc string, m meta) (T, error)) ([]T, error) {
	rows, err := s.r.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, s.fail(ctx, what, err)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		_, doc, m, err := scanDoc(rows)
		if err != nil {
			return nil, s.fail(ctx, what, err)
		}
		v, err := decode(doc, m)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail(ctx, what, err)
	}
	return out, nil
}

// Group returns an enrollment group.
func (s *Store) Group(ctx context.Context, groupID string) (*dps.EnrollmentGroup, error) {
	return run(ctx, s, read, func(ctx context.Context) (*dps.EnrollmentGroup, error) {
		return getDoc(ctx, s, fmt.Sprintf("enrollment group %q", groupID), qGroup, key(groupID), decodeGroup)
	})
}

// PutGroup writes g per ifMatch, together with the index rows derived from
// its attestation (signing certificates, CA references), and returns it as
// stored. g is not modified.
func (s *Store) PutGroup(ctx context.Context, g *dps.EnrollmentGroup, ifMatch string) (*dps.EnrollmentGroup, error) {
	return run(ctx, s, write, func(ctx context.Context) (*dps.EnrollmentGroup, error) {
		if g == nil || g.EnrollmentGroupID == "" {
			return nil, errors.New("enrollment group: the group ID is empty")
		}
		what := fmt.Sprintf("enrollment group %q", g.EnrollmentGroupID)
		doc, err := recordDoc(g)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		k := key(g.EnrollmentGroupID)
		var m meta
		err = s.inConfigTx(ctx, what, func(tx *txn) error {
			var err error
			m, err = s.put(ctx, tx, groupsT, what, k, groupCols(g, doc), ifMatch, newEtag)
			if err != nil {
				return err
			}
			return s.writeGroupIndex(ctx, tx, what, g)
		})
		if err != nil {
			return nil, err
		}
		return decodeGroup(string(doc), m)
	})
}

// recordDoc is the stored document of an enrollment or group: the model
// without the etag and timestamps, which live in their own columns.
func recordDoc[T any, P dps.EnrollmentPtr[T]](v P) ([]byte, error) {
	c := P(new(T))
	*c = *v
	s := c.Settings()
	s.Etag, s.CreatedDateTimeUtc, s.LastUpdatedDateTimeUtc = "", nil, nil
	return json.Marshal(c)
}

// groupCols are the data columns of groupsT.
func groupCols(g *dps.EnrollmentGroup, doc []byte) []any {
	var attType string
	if g.Attestation != nil {
		attType = strings.ToLower(g.Attestation.Type)
	}
	return []any{attType, string(doc)}
}

// writeGroupIndex replaces the index rows derived from a group's
// attestation (signing certificates, CA references) in tx.
func (s *Store) writeGroupIndex(ctx context.Context, tx queryer, what string, g *dps.EnrollmentGroup) error {
	k := key(g.EnrollmentGroupID)
	if _, err := tx.ExecContext(ctx, qDeleteGroupSigningCerts, k); err != nil {
		return s.fail(ctx, what, err)
	}
	if _, err := tx.ExecContext(ctx, qDeleteGroupCARefs, k); err != nil {
		return s.fail(ctx, what, err)
	}
	for _, sc := range signingCerts(g) {
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO group_signing_certs (group_key, slot, sha256_thumbprint, subject, der) VALUES ($1, $2, $3, $4, $5)`,
			k, sc.slot, sc.thumbprint, sc.subject, sc.der); err != nil {
			return s.fail(ctx, what, err)
		}
	}
	for _, r := range caRefs(g) {
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO group_ca_refs (group_key, slot, ca_key) VALUES ($1, $2, $3)`,
			k, r.slot, r.caKey); err != nil {
			return s.fail(ctx, what, err)
		}
	}
	return nil
}

// DeleteGroup deletes an enrollment group per ifMatch; its index rows go
// with it (ON DELETE CASCADE).
func (s *Store) DeleteGroup(ctx context.Context, groupID, ifMatch string) error {
	return run0(ctx, s, write, func(ctx context.Context) error {
		what := fmt.Sprintf("enrollment group %q", groupID)
		return s.inConfigTx(ctx, what, func(tx *txn) error { return s.remove(ctx, tx, groupsT, what, key(groupID), ifMatch) })
	})
}

// Groups returns a page of enrollment groups in key order.
func (s *Store) Groups(ctx context.Context, after string, limit int) (store.Page[*dps.EnrollmentGroup], error) {
	return run(ctx, s, read, func(ctx context.Context) (store.Page[*dps.EnrollmentGroup], error) {
		return page(ctx, s, "enrollment groups", qGroupsAfter,
			[]any{key(after)}, limit, decodeGroup)
	})
}

// GroupsBySigningCert returns the groups whose primary or secondary signing
// certificate has this SHA-256 thumbprint.
func (s *Store) GroupsBySigningCert(ctx context.Context, sha256Thumbprint string) ([]*dps.EnrollmentGroup, error) {
	return run(ctx, s, read, func(ctx context.Context) ([]*dps.EnrollmentGroup, error) {
		return list(ctx, s, "enrollment groups by signing certificate",
			qGroupsBySigningCert,
			[]any{normThumbprint(sha256Thumbprint)}, decodeGroup)
	})
}

// GroupsByCA returns the groups whose caReferences name this CA.
func (s *Store) GroupsByCA(ctx context.Context, caName string) ([]*dps.EnrollmentGroup, error) {
	return run(ctx, s, read, func(ctx context.Context) ([]*dps.EnrollmentGroup, error) {
		return list(ctx, s, "enrollment groups by CA",
			qGroupsByCA,
			[]any{key(caName)}, decodeGroup)
	})
}

// SigningCertsBySubject returns the distinct signing certificates (DER) of
// groups whose raw DER subject is subject.
func (s *Store) SigningCertsBySubject(ctx context.Context, subject []byte) ([][]byte, error) {
	return run(ctx, s, read, func(ctx context.Context) ([][]byte, error) {
		const what = "signing certificates by subject"
		if len(subject) == 0 {
			return nil, nil
		}
		rows, err := s.r.QueryContext(ctx,
			qSigningCertsBySubject, subject)
		if err != nil {
			return nil, s.fail(ctx, what, err)
		}
		defer rows.Close()
		var out [][]byte
		seen := map[string]bool{}
		for rows.Next() {
			var der []byte
			if err := rows.Scan(&der); err != nil {
				return nil, s.fail(ctx, what, err)
			}
			if !seen[string(der)] {
				seen[string(der)] = true
				out = append(out, der)
			}
		}
		if err := rows.Err(); err != nil {
			return nil, s.fail(ctx, what, err)
		}
		return out, nil
	})
}

// SymmetricKeyGroups returns every group with symmetric-key attestation.
func (s *Store) SymmetricKeyGroups(ctx context.Context) ([]*dps.EnrollmentGroup, error) {
	return run(ctx, s, read, func(ctx context.Context) ([]*dps.EnrollmentGroup, error) {
		return list(ctx, s, "symmetric-key enrollment groups",
			qGroupsByAttestation, []any{symmetricKeyLower}, decodeGroup)
	})
}
