package sqlstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/dpsd/dpsd/internal/store"
)

// Certificate issuance: issuing CAs are versioned records like CA
// certificates; issued certificates are written once (with the registration
// that issued them) and then only revoked, so they carry no etag.

var issuingCAsT = newTable("issuing_cas", "name", "der", "private_key", "doc")

const (
	selectIssuingCA = `SELECT name, der, private_key, doc, etag, created, updated FROM issuing_cas`
	issuedColumns   = `serial_number, registration_id, group_id, ca_name, der, sha256_thumbprint, not_before, not_after, created, revoked, revocation_reason`
	selectIssued    = `SELECT key, ` + issuedColumns + ` FROM issued_certificates`
	insertIssued    = `INSERT INTO issued_certificates (key, registration_key, ca_key, ` + issuedColumns + `) ` +
		`VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`
	// restoreIssued overwrites every column: an import carries the
	// revocation too.
	restoreIssued = insertIssued + ` ON CONFLICT (key) DO UPDATE SET registration_key = excluded.registration_key, ` +
		`ca_key = excluded.ca_key, serial_number = excluded.serial_number, registration_id = excluded.registration_id, ` +
		`group_id = excluded.group_id, ca_name = excluded.ca_name, der = excluded.der, sha256_thumbprint = excluded.sha256_thumbprint, ` +
		`not_before = excluded.not_before, not_after = excluded.not_after, created = excluded.created, ` +
		`revoked = excluded.revoked, revocation_reason = excluded.revocation_reason`
	revokeIssuedBySerial       = `UPDATE issued_certificates SET revoked = $2, revocation_reason = $3 WHERE key = $1 AND revoked = 0`
	revokeIssuedByRegistration = `UPDATE issued_certificates SET revoked = $2, revocation_reason = $3 WHERE registration_key = $1 AND revoked = 0`
)

// issuingCADoc is the stored document of an issuing CA: what is not a
// column. Its JSON names are fixed here so renaming a Go field cannot
// orphan stored data.
type issuingCADoc struct {
	Chain                   [][]byte `json:"chain,omitempty"`
	Origin                  string   `json:"origin"`
	CertificateValidityDays int      `json:"certificateValidityDays"`
	ExtendedKeyUsages       []string `json:"extendedKeyUsages"`
}

func scanIssuingCA(sc scanner) (*store.IssuingCA, error) {
	var c store.IssuingCA
	var key, doc string
	var m meta
	if err := sc.Scan(&c.Name, &c.CertificateDER, &key, &doc, &m.etag, &m.created, &m.updated); err != nil {
		return nil, err
	}
	var d issuingCADoc
	if err := json.Unmarshal([]byte(doc), &d); err != nil {
		return nil, fmt.Errorf("issuing CA %q: corrupt record: %w", c.Name, err)
	}
	c.PrivateKeyPEM = []byte(key)
	c.ChainDER, c.Origin, c.CertificateValidityDays, c.ExtendedKeyUsages = d.Chain, d.Origin, d.CertificateValidityDays, d.ExtendedKeyUsages
	c.Etag, c.Created, c.Updated = quoted(m.etag), fromNanos(m.created), fromNanos(m.updated)
	return &c, nil
}

// IssuingCA returns an issuing CA by name.
func (s *Store) IssuingCA(ctx context.Context, name string) (*store.IssuingCA, error) {
	return run(ctx, s, read, func(ctx context.Context) (*store.IssuingCA, error) {
		return one(ctx, s, fmt.Sprintf("issuing CA %q", name), s.r.QueryRowContext(ctx, qIssuingCA, key(name)), scanIssuingCA)
	})
}

// IssuingCAs returns every issuing CA, by name.
func (s *Store) IssuingCAs(ctx context.Context) ([]*store.IssuingCA, error) {
	return run(ctx, s, read, func(ctx context.Context) ([]*store.IssuingCA, error) {
		return all(ctx, s, "issuing CAs", selectIssuingCA+` ORDER BY key`, nil, scanIssuingCA)
	})
}

// PutIssuingCA writes c per ifMatch and returns it as stored.
func (s *Store) PutIssuingCA(ctx context.Context, c *store.IssuingCA, ifMatch string) (*store.IssuingCA, error) {
	return run(ctx, s, write, func(ctx context.Context) (*store.IssuingCA, error) {
		what, cols, err := issuingCACols(c)
		if err != nil {
			return nil, err
		}
		m, err := s.put(ctx, s.w, issuingCAsT, what, key(c.Name), cols, ifMatch, newEtag)
		if err != nil {
			return nil, err
		}
		out := copyIssuingCA(c)
		out.Etag, out.Created, out.Updated = quoted(m.etag), fromNanos(m.created), fromNanos(m.updated)
		return out, nil
	})
}

// issuingCACols checks c and returns what names it in errors and the data
// columns of issuingCAsT.
func issuingCACols(c *store.IssuingCA) (string, []any, error) {
	if c == nil || c.Name == "" {
		return "", nil, errors.New("issuing CA: the name is empty")
	}
	what := fmt.Sprintf("issuing CA %q", c.Name)
	if len(c.CertificateDER) == 0 || len(c.PrivateKeyPEM) == 0 {
		return "", nil, fmt.Errorf("%s: no certificate or private key", what)
	}
	ekus := c.ExtendedKeyUsages
	if ekus == nil {
		ekus = []string{}
	}
	doc, err := json.Marshal(issuingCADoc{Chain: c.ChainDER, Origin: c.Origin, CertificateValidityDays: c.CertificateValidityDays, ExtendedKeyUsages: ekus})
	if err != nil {
		return "", nil, fmt.Errorf("%s: %w", what, err)
	}
	return what, []any{c.Name, c.CertificateDER, string(c.PrivateKeyPEM), string(doc)}, nil
}

func copyIssuingCA(c *store.IssuingCA) *store.IssuingCA {
	out := *c
	out.CertificateDER = append([]byte{}, c.CertificateDER...)
	out.PrivateKeyPEM = append([]byte{}, c.PrivateKeyPEM...)
	out.ChainDER = nil
	for _, d := range c.ChainDER {
		out.ChainDER = append(out.ChainDER, append([]byte{}, d...))
	}
	out.ExtendedKeyUsages = append([]string{}, c.ExtendedKeyUsages...)
	return &out
}

// DeleteIssuingCA deletes an issuing CA per ifMatch; the records of what it
// issued stay.
func (s *Store) DeleteIssuingCA(ctx context.Context, name, ifMatch string) error {
	return run0(ctx, s, write, func(ctx context.Context) error {
		return s.remove(ctx, s.w, issuingCAsT, fmt.Sprintf("issuing CA %q", name), key(name), ifMatch)
	})
}

// Issued certificates.

// serialKey is the primary key of a serial number given in any case, with or
// without separators.
func serialKey(serial string) string { return strings.ToLower(normThumbprint(serial)) }

func scanIssued(sc scanner) (string, *store.IssuedCertificate, error) {
	var c store.IssuedCertificate
	var k string
	var notBefore, notAfter, created, revoked int64
	if err := sc.Scan(&k, &c.SerialNumber, &c.RegistrationID, &c.EnrollmentGroupID, &c.IssuingCA, &c.CertificateDER,
		&c.SHA256Thumbprint, &notBefore, &notAfter, &created, &revoked, &c.RevocationReason); err != nil {
		return "", nil, err
	}
	c.NotBefore, c.NotAfter, c.Created, c.RevokedAt = fromNanos(notBefore), fromNanos(notAfter), fromNanos(created), fromNanos(revoked)
	return k, &c, nil
}

func scanIssuedOnly(sc scanner) (*store.IssuedCertificate, error) {
	_, c, err := scanIssued(sc)
	return c, err
}

// issuedRow checks c and returns the arguments of insertIssued, with the
// serial number upper-cased and the thumbprint derived from the
// certificate when c leaves it empty. created is used when c has none.
func issuedRow(c *store.IssuedCertificate, created int64) ([]any, error) {
	if c.SerialNumber == "" || c.RegistrationID == "" || c.IssuingCA == "" || len(c.CertificateDER) == 0 {
		return nil, errors.New("issued certificate: the serial number, registration ID, issuing CA or certificate is empty")
	}
	tp := normThumbprint(c.SHA256Thumbprint)
	if tp == "" {
		sum := sha256.Sum256(c.CertificateDER)
		tp = strings.ToUpper(hex.EncodeToString(sum[:]))
	}
	if t := toNanos(c.Created); t != 0 {
		created = t
	}
	return []any{serialKey(c.SerialNumber), key(c.RegistrationID), key(c.IssuingCA),
		strings.ToUpper(normThumbprint(c.SerialNumber)), c.RegistrationID, c.EnrollmentGroupID, c.IssuingCA, c.CertificateDER, tp,
		toNanos(c.NotBefore), toNanos(c.NotAfter), created, toNanos(c.RevokedAt), c.RevocationReason}, nil
}

// newIssuedRow checks c, a certificate just issued, and returns the
// arguments of insertIssued, taken before the write joins a batch: the
// caller owns c again as soon as it stops waiting.
func (s *Store) newIssuedRow(c *store.IssuedCertificate) ([]any, error) {
	args, err := issuedRow(c, s.stamp())
	if err != nil {
		return nil, err
	}
	args[7] = slices.Clone(c.CertificateDER)
	// A new certificate is never revoked yet.
	args[12], args[13] = int64(0), ""
	return args, nil
}

// issuedStmt is the statement that records a newly issued certificate
// (newIssuedRow).
func issuedStmt(args []any) stmt {
	return stmt{what: fmt.Sprintf("issued certificate %s", args[3]), query: insertIssued, args: args}
}

// IssuedCertificate returns an issued certificate by serial number.
func (s *Store) IssuedCertificate(ctx context.Context, serialNumber string) (*store.IssuedCertificate, error) {
	return run(ctx, s, read, func(ctx context.Context) (*store.IssuedCertificate, error) {
		return one(ctx, s, fmt.Sprintf("issued certificate %s", serialNumber),
			s.r.QueryRowContext(ctx, qIssued, serialKey(serialNumber)), scanIssuedOnly)
	})
}

// IssuedCertificateByThumbprint returns the issued certificate with this
// SHA-256 thumbprint.
func (s *Store) IssuedCertificateByThumbprint(ctx context.Context, sha256Thumbprint string) (*store.IssuedCertificate, error) {
	return run(ctx, s, lookup, func(ctx context.Context) (*store.IssuedCertificate, error) {
		return one(ctx, s, fmt.Sprintf("issued certificate with thumbprint %s", sha256Thumbprint),
			s.r.QueryRowContext(ctx, qIssuedByThumbprint, normThumbprint(sha256Thumbprint)), scanIssuedOnly)
	})
}

// IssuedCertificates pages through the issued certificates f selects, in
// serial number order.
func (s *Store) IssuedCertificates(ctx context.Context, f store.IssuedFilter, after string, limit int) (store.Page[*store.IssuedCertificate], error) {
	return run(ctx, s, read, func(ctx context.Context) (store.Page[*store.IssuedCertificate], error) {
		var q string
		var args []any
		switch {
		case f.RegistrationID != "" && f.IssuingCA != "":
			q, args = qIssuedByRegistrationAndCA, []any{key(f.RegistrationID), key(f.IssuingCA)}
		case f.RegistrationID != "":
			q, args = qIssuedByRegistration, []any{key(f.RegistrationID)}
		case f.IssuingCA != "":
			q, args = qIssuedByCA, []any{key(f.IssuingCA)}
		default:
			q = qIssuedAfter
		}
		n := pageSize(limit)
		args = append(args, serialKey(after), n+1)
		var p store.Page[*store.IssuedCertificate]
		rows, err := s.r.QueryContext(ctx, q, args...)
		if err != nil {
			return p, s.fail(ctx, "issued certificates", err)
		}
		defer rows.Close()
		var last string
		for rows.Next() {
			if len(p.Items) == n {
				p.Next = last
				break
			}
			k, c, err := scanIssued(rows)
			if err != nil {
				return store.Page[*store.IssuedCertificate]{}, s.fail(ctx, "issued certificates", err)
			}
			p.Items = append(p.Items, c)
			last = k
		}
		if err := rows.Err(); err != nil {
			return store.Page[*store.IssuedCertificate]{}, s.fail(ctx, "issued certificates", err)
		}
		return p, nil
	})
}

// RevokeIssuedCertificates revokes what r names and returns it as stored.
func (s *Store) RevokeIssuedCertificates(ctx context.Context, r store.Revocation) ([]*store.IssuedCertificate, error) {
	return run(ctx, s, write, func(ctx context.Context) ([]*store.IssuedCertificate, error) {
		if (r.SerialNumber == "") == (r.RegistrationID == "") {
			return nil, errors.New("revocation: name a serial number or a registration ID, not both")
		}
		var out []*store.IssuedCertificate
		err := s.inTx(ctx, "revoke", func(tx *txn) error {
			now := s.stamp()
			var err error
			if r.SerialNumber != "" {
				what := fmt.Sprintf("issued certificate %s", r.SerialNumber)
				if _, err = tx.ExecContext(ctx, revokeIssuedBySerial, serialKey(r.SerialNumber), now, r.Reason); err != nil {
					return s.fail(ctx, what, err)
				}
				c, err := one(ctx, s, what, tx.QueryRowContext(ctx, qIssued, serialKey(r.SerialNumber)), scanIssuedOnly)
				if err != nil {
					return err
				}
				out = []*store.IssuedCertificate{c}
				return nil
			}
			what := fmt.Sprintf("certificates issued for %q", r.RegistrationID)
			if _, err = tx.ExecContext(ctx, revokeIssuedByRegistration, key(r.RegistrationID), now, r.Reason); err != nil {
				return s.fail(ctx, what, err)
			}
			out, err = queryAll(ctx, s, tx, what, qIssuedOfRegistration, []any{key(r.RegistrationID)}, scanIssuedOnly)
			return err
		})
		return out, err
	})
}

// RevokedCertificates returns the revoked certificates of an issuing CA.
func (s *Store) RevokedCertificates(ctx context.Context, issuingCA string) ([]*store.IssuedCertificate, error) {
	return run(ctx, s, read, func(ctx context.Context) ([]*store.IssuedCertificate, error) {
		return all(ctx, s, fmt.Sprintf("certificates revoked by issuing CA %q", issuingCA), qRevokedByCA, []any{key(issuingCA)}, scanIssuedOnly)
	})
}

// queryAll is all on q (a transaction).
func queryAll[T any](ctx context.Context, s *Store, q queryer, what, query string, args []any, scan func(scanner) (T, error)) ([]T, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, s.fail(ctx, what, err)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, s.fail(ctx, what, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail(ctx, what, err)
	}
	return out, nil
}
