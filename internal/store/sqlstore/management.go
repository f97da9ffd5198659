package sqlstore

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/dpsd/dpsd/internal/store"
)

var (
	policiesT = newTable("policies", "name", "primary_key", "secondary_key", "rights")
	casT      = newTable("ca_certificates", "name", "der", "sha256_thumbprint", "subject", "is_verified", "verification_code")
	hubsT     = newTable("linked_hubs", "name", "connection_string", "location", "allocation_weight", "apply_allocation_policy",
		"device_registry", "registry_webhook_url", "registry_webhook_secret")
)

const (
	selectPolicy = `SELECT name, primary_key, secondary_key, rights, etag, created, updated FROM policies`
	selectCA     = `SELECT name, der, sha256_thumbprint, subject, is_verified, verification_code, etag, created, updated FROM ca_certificates`
	selectHub    = `SELECT name, connection_string, location, allocation_weight, apply_allocation_policy, ` +
		`device_registry, registry_webhook_url, registry_webhook_secret, etag, created, updated FROM linked_hubs`
)

type scanner interface{ Scan(...any) error }

// one reads a single row with scan, mapping no row to ErrNotFound.
func one[T any](ctx context.Context, s *Store, what string, row *sql.Row, scan func(scanner) (T, error)) (T, error) {
	v, err := scan(row)
	var zero T
	if errors.Is(err, sql.ErrNoRows) {
		return zero, fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	if err != nil {
		return zero, s.fail(ctx, what, err)
	}
	return v, nil
}

// all reads every row of query with scan.
func all[T any](ctx context.Context, s *Store, what, query string, args []any, scan func(scanner) (T, error)) ([]T, error) {
	return queryAll(ctx, s, s.r, what, query, args, scan)
}

// Policies.

func scanPolicy(sc scanner) (*store.Policy, error) {
	var p store.Policy
	var rights string
	var m meta
	if err := sc.Scan(&p.Name, &p.PrimaryKey, &p.SecondaryKey, &rights, &m.etag, &m.created, &m.updated); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(rights), &p.Rights); err != nil {
		return nil, fmt.Errorf("policy %q: corrupt rights: %w", p.Name, err)
	}
	p.Etag, p.Created, p.Updated = quoted(m.etag), fromNanos(m.created), fromNanos(m.updated)
	return &p, nil
}

// Policy returns a shared access policy.
func (s *Store) Policy(ctx context.Context, name string) (*store.Policy, error) {
	return run(ctx, s, read, func(ctx context.Context) (*store.Policy, error) {
		return one(ctx, s, fmt.Sprintf("policy %q", name),
			s.r.QueryRowContext(ctx, qPolicy, key(name)), scanPolicy)
	})
}

// Policies returns every shared access policy, by name.
func (s *Store) Policies(ctx context.Context) ([]*store.Policy, error) {
	return run(ctx, s, read, func(ctx context.Context) ([]*store.Policy, error) {
		return all(ctx, s, "policies", selectPolicy+` ORDER BY key`, nil, scanPolicy)
	})
}

// PutPolicy writes p per ifMatch and returns it as stored.
func (s *Store) PutPolicy(ctx context.Context, p *store.Policy, ifMatch string) (*store.Policy, error) {
	return run(ctx, s, write, func(ctx context.Context) (*store.Policy, error) {
		if p == nil || p.Name == "" {
			return nil, errors.New("policy: the name is empty")
		}
		what := fmt.Sprintf("policy %q", p.Name)
		cols, err := policyCols(p)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		m, err := s.put(ctx, s.w, policiesT, what, key(p.Name), cols, ifMatch, newEtag)
		if err != nil {
			return nil, err
		}
		out := *p
		out.Rights = append([]string{}, p.Rights...)
		out.Etag, out.Created, out.Updated = quoted(m.etag), fromNanos(m.created), fromNanos(m.updated)
		return &out, nil
	})
}

// policyCols are the data columns of policiesT.
func policyCols(p *store.Policy) ([]any, error) {
	rights := p.Rights
	if rights == nil {
		rights = []string{}
	}
	rj, err := json.Marshal(rights)
	if err != nil {
		return nil, err
	}
	return []any{p.Name, p.PrimaryKey, p.SecondaryKey, string(rj)}, nil
}

// DeletePolicy deletes a shared access policy per ifMatch.
func (s *Store) DeletePolicy(ctx context.Context, name, ifMatch string) error {
	return run0(ctx, s, write, func(ctx context.Context) error {
		return s.remove(ctx, s.w, policiesT, fmt.Sprintf("policy %q", name), key(name), ifMatch)
	})
}

// CA certificates.

func scanCA(sc scanner) (*store.CACertificate, error) {
	var c store.CACertificate
	var m meta
	if err := sc.Scan(&c.Name, &c.CertificateDER, &c.SHA256Thumbprint, &c.Subject, &c.IsVerified, &c.VerificationCode,
		&m.etag, &m.created, &m.updated); err != nil {
		return nil, err
	}
	c.Etag, c.Created, c.Updated = quoted(m.etag), fromNanos(m.created), fromNanos(m.updated)
	return &c, nil
}

// CACertificate returns a CA certificate by name.
func (s *Store) CACertificate(ctx context.Context, name string) (*store.CACertificate, error) {
	return run(ctx, s, read, func(ctx context.Context) (*store.CACertificate, error) {
		return one(ctx, s, fmt.Sprintf("CA certificate %q", name),
			s.r.QueryRowContext(ctx, qCA, key(name)), scanCA)
	})
}

// CACertificates returns every CA certificate, by name.
func (s *Store) CACertificates(ctx context.Context) ([]*store.CACertificate, error) {
	return run(ctx, s, read, func(ctx context.Context) ([]*store.CACertificate, error) {
		return all(ctx, s, "CA certificates", selectCA+` ORDER BY key`, nil, scanCA)
	})
}

// PutCACertificate writes c per ifMatch and returns it as stored. The
// thumbprint and subject are derived from the certificate if the caller left
// them empty, so that the lookups cannot miss a CA.
func (s *Store) PutCACertificate(ctx context.Context, c *store.CACertificate, ifMatch string) (*store.CACertificate, error) {
	return run(ctx, s, write, func(ctx context.Context) (*store.CACertificate, error) {
		if c == nil || c.Name == "" {
			return nil, errors.New("CA certificate: the name is empty")
		}
		what := fmt.Sprintf("CA certificate %q", c.Name)
		if len(c.CertificateDER) == 0 {
			return nil, fmt.Errorf("%s: no certificate", what)
		}
		out, cols := caCols(c)
		var m meta
		err := s.inConfigTx(ctx, what, func(tx *txn) (err error) {
			m, err = s.put(ctx, tx, casT, what, key(c.Name), cols, ifMatch, newEtag)
			return err
		})
		if err != nil {
			return nil, err
		}
		out.Etag, out.Created, out.Updated = quoted(m.etag), fromNanos(m.created), fromNanos(m.updated)
		return out, nil
	})
}

// caCols returns a copy of c with the thumbprint and subject derived from
// the certificate where c left them empty, and the data columns of casT.
func caCols(c *store.CACertificate) (*store.CACertificate, []any) {
	out := *c
	out.CertificateDER = append([]byte{}, c.CertificateDER...)
	out.SHA256Thumbprint = normThumbprint(c.SHA256Thumbprint)
	if out.SHA256Thumbprint == "" {
		sum := sha256.Sum256(out.CertificateDER)
		out.SHA256Thumbprint = strings.ToUpper(hex.EncodeToString(sum[:]))
	}
	out.Subject = append([]byte{}, c.Subject...)
	if len(out.Subject) == 0 {
		if cert, err := x509.ParseCertificate(out.CertificateDER); err == nil {
			out.Subject = append([]byte{}, cert.RawSubject...)
		}
	}
	return &out, []any{c.Name, out.CertificateDER, out.SHA256Thumbprint, out.Subject, out.IsVerified, out.VerificationCode}
}

// DeleteCACertificate deletes a CA certificate per ifMatch. Groups that
// reference it keep their reference; the caller decides whether to allow it.
func (s *Store) DeleteCACertificate(ctx context.Context, name, ifMatch string) error {
	return run0(ctx, s, write, func(ctx context.Context) error {
		what := fmt.Sprintf("CA certificate %q", name)
		return s.inConfigTx(ctx, what, func(tx *txn) error { return s.remove(ctx, tx, casT, what, key(name), ifMatch) })
	})
}

// CACertificatesByThumbprint returns the CAs with this SHA-256 thumbprint.
func (s *Store) CACertificatesByThumbprint(ctx context.Context, sha256Thumbprint string) ([]*store.CACertificate, error) {
	return run(ctx, s, read, func(ctx context.Context) ([]*store.CACertificate, error) {
		return all(ctx, s, "CA certificates by thumbprint", qCAsByThumbprint,
			[]any{normThumbprint(sha256Thumbprint)}, scanCA)
	})
}

// CACertificatesBySubject returns the CAs whose raw DER subject is subject.
func (s *Store) CACertificatesBySubject(ctx context.Context, subject []byte) ([]*store.CACertificate, error) {
	return run(ctx, s, read, func(ctx context.Context) ([]*store.CACertificate, error) {
		if len(subject) == 0 {
			return nil, nil
		}
		return all(ctx, s, "CA certificates by subject", qCAsBySubject,
			[]any{subject}, scanCA)
	})
}

// Linked hubs.

func scanHub(sc scanner) (*store.LinkedHub, error) {
	var h store.LinkedHub
	var m meta
	if err := sc.Scan(&h.Name, &h.ConnectionString, &h.Location, &h.AllocationWeight, &h.ApplyAllocationPolicy,
		&h.DeviceRegistry, &h.RegistryWebhookURL, &h.RegistryWebhookSecret, &m.etag, &m.created, &m.updated); err != nil {
		return nil, err
	}
	h.Etag, h.Created, h.Updated = quoted(m.etag), fromNanos(m.created), fromNanos(m.updated)
	return &h, nil
}

// LinkedHub returns a linked hub by host name.
func (s *Store) LinkedHub(ctx context.Context, name string) (*store.LinkedHub, error) {
	return run(ctx, s, read, func(ctx context.Context) (*store.LinkedHub, error) {
		return one(ctx, s, fmt.Sprintf("linked hub %q", name),
			s.r.QueryRowContext(ctx, qHub, key(name)), scanHub)
	})
}

// LinkedHubs returns every linked hub, by name.
func (s *Store) LinkedHubs(ctx context.Context) ([]*store.LinkedHub, error) {
	return run(ctx, s, read, func(ctx context.Context) ([]*store.LinkedHub, error) {
		return all(ctx, s, "linked hubs", selectHub+` ORDER BY key`, nil, scanHub)
	})
}

// PutLinkedHub writes h per ifMatch and returns it as stored.
func (s *Store) PutLinkedHub(ctx context.Context, h *store.LinkedHub, ifMatch string) (*store.LinkedHub, error) {
	return run(ctx, s, write, func(ctx context.Context) (*store.LinkedHub, error) {
		if h == nil || h.Name == "" {
			return nil, errors.New("linked hub: the name is empty")
		}
		what := fmt.Sprintf("linked hub %q", h.Name)
		var m meta
		err := s.inConfigTx(ctx, what, func(tx *txn) (err error) {
			m, err = s.put(ctx, tx, hubsT, what, key(h.Name), hubCols(h), ifMatch, newEtag)
			return err
		})
		if err != nil {
			return nil, err
		}
		out := *h
		out.Etag, out.Created, out.Updated = quoted(m.etag), fromNanos(m.created), fromNanos(m.updated)
		return &out, nil
	})
}

// hubCols are the data columns of hubsT.
func hubCols(h *store.LinkedHub) []any {
	return []any{h.Name, h.ConnectionString, h.Location, h.AllocationWeight, h.ApplyAllocationPolicy,
		h.DeviceRegistry, h.RegistryWebhookURL, h.RegistryWebhookSecret}
}

// DeleteLinkedHub deletes a linked hub per ifMatch.
func (s *Store) DeleteLinkedHub(ctx context.Context, name, ifMatch string) error {
	return run0(ctx, s, write, func(ctx context.Context) error {
		what := fmt.Sprintf("linked hub %q", name)
		return s.inConfigTx(ctx, what, func(tx *txn) error { return s.remove(ctx, tx, hubsT, what, key(name), ifMatch) })
	})
}
