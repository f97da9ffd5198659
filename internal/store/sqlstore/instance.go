package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/dpsd/dpsd/internal/store"
)

// instanceDoc is the stored form of store.Instance. Its JSON names are fixed
// here rather than taken from the Go field names, so renaming a field cannot
// orphan stored data.
type instanceDoc struct {
	IDScope            string   `json:"idScope"`
	AllocationPolicy   string   `json:"allocationPolicy,omitempty"`
	ServerCACertPEM    string   `json:"serverCaCertPem,omitempty"`
	ServerCAKeyPEM     string   `json:"serverCaKeyPem,omitempty"`
	ServerCertPEM      string   `json:"serverCertPem,omitempty"`
	ServerKeyPEM       string   `json:"serverKeyPem,omitempty"`
	HostNames          []string `json:"hostNames,omitempty"`
	TPMChallengeSecret []byte   `json:"tpmChallengeSecret,omitempty"` // base64 in JSON
}

func instanceToDoc(inst *store.Instance) instanceDoc {
	return instanceDoc{
		IDScope:            inst.IDScope,
		AllocationPolicy:   inst.AllocationPolicy,
		ServerCACertPEM:    string(inst.ServerCACertPEM),
		ServerCAKeyPEM:     string(inst.ServerCAKeyPEM),
		ServerCertPEM:      string(inst.ServerCertPEM),
		ServerKeyPEM:       string(inst.ServerKeyPEM),
		HostNames:          inst.HostNames,
		TPMChallengeSecret: inst.TPMChallengeSecret,
	}
}

func (d instanceDoc) instance(created int64) *store.Instance {
	return &store.Instance{
		IDScope:            d.IDScope,
		CreatedAt:          fromNanos(created),
		AllocationPolicy:   d.AllocationPolicy,
		ServerCACertPEM:    bytesOrNil(d.ServerCACertPEM),
		ServerCAKeyPEM:     bytesOrNil(d.ServerCAKeyPEM),
		ServerCertPEM:      bytesOrNil(d.ServerCertPEM),
		ServerKeyPEM:       bytesOrNil(d.ServerKeyPEM),
		HostNames:          d.HostNames,
		TPMChallengeSecret: d.TPMChallengeSecret,
	}
}

func bytesOrNil(s string) []byte {
	if s == "" {
		return nil
	}
	return []byte(s)
}

const selectInstance = `SELECT doc, created FROM instance WHERE id = 1`

// Instance returns the instance, or ErrNotFound before InitInstance.
func (s *Store) Instance(ctx context.Context) (*store.Instance, error) {
	return run(ctx, s, read, func(ctx context.Context) (*store.Instance, error) {
		return s.instance(ctx, s.r, "")
	})
}

func (s *Store) instance(ctx context.Context, q queryer, suffix string) (*store.Instance, error) {
	var doc string
	var created int64
	err := q.QueryRowContext(ctx, selectInstance+suffix).Scan(&doc, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("instance: %w", store.ErrNotFound)
	}
	if err != nil {
		return nil, s.fail(ctx, "instance", err)
	}
	var d instanceDoc
	if err := json.Unmarshal([]byte(doc), &d); err != nil {
		return nil, fmt.Errorf("instance: corrupt record: %w", err)
	}
	return d.instance(created), nil
}

// InitInstance stores inst unless an instance exists, and returns the stored
// one. CreatedAt defaults to now.
func (s *Store) InitInstance(ctx context.Context, inst *store.Instance) (*store.Instance, error) {
	return run(ctx, s, write, func(ctx context.Context) (*store.Instance, error) {
		if inst == nil || inst.IDScope == "" {
			return nil, errors.New("instance: the ID scope is empty")
		}
		doc, err := json.Marshal(instanceToDoc(inst))
		if err != nil {
			return nil, fmt.Errorf("instance: %w", err)
		}
		created := toNanos(inst.CreatedAt.UTC())
		if created == 0 {
			created = s.stamp()
		}
		var out *store.Instance
		// One transaction, so that the loser of a race reads the winner's row.
		err = s.inConfigTx(ctx, "instance", func(tx *txn) error {
			_, err := tx.ExecContext(ctx,
				`INSERT INTO instance (id, id_scope, doc, created) VALUES (1, $1, $2, $3) ON CONFLICT (id) DO NOTHING`,
				inst.IDScope, string(doc), created)
			if err != nil {
				return s.fail(ctx, "instance", err)
			}
			out, err = s.instance(ctx, tx, "")
			return err
		})
		if err != nil {
			return nil, err
		}
		return out, nil
	})
}

// UpdateInstance replaces the instance's mutable fields: the allocation
// policy, the server certificate and key, and the host names; it sets the
// TPM challenge secret when the stored instance has none. The ID scope, the
// creation time, the server CA and a stored TPM challenge secret are kept.
func (s *Store) UpdateInstance(ctx context.Context, inst *store.Instance) error {
	return run0(ctx, s, write, func(ctx context.Context) error {
		if inst == nil {
			return errors.New("instance: nil")
		}
		return s.inConfigTx(ctx, "instance", func(tx *txn) error {
			cur, err := s.instance(ctx, tx, s.d.forUpdate)
			if err != nil {
				return err
			}
			cur.AllocationPolicy = inst.AllocationPolicy
			cur.ServerCertPEM = inst.ServerCertPEM
			cur.ServerKeyPEM = inst.ServerKeyPEM
			cur.HostNames = inst.HostNames
			if len(cur.TPMChallengeSecret) == 0 {
				cur.TPMChallengeSecret = inst.TPMChallengeSecret
			}
			doc, err := json.Marshal(instanceToDoc(cur))
			if err != nil {
				return fmt.Errorf("instance: %w", err)
			}
			if _, err := tx.ExecContext(ctx, `UPDATE instance SET doc = $1 WHERE id = 1`, string(doc)); err != nil {
				return s.fail(ctx, "instance", err)
			}
			return nil
		})
	})
}
