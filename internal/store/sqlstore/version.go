package sqlstore

import (
	"context"
	"math/rand/v2"
)

const (
	qConfigVersion    = `SELECT version FROM config_version WHERE id = 1`
	bumpConfigVersion = `UPDATE config_version SET version = $1 WHERE id = 1`
)

// ConfigVersion returns the version of the instance, linked hubs, CA
// certificates and enrollment groups (see store.Store).
func (s *Store) ConfigVersion(ctx context.Context) (int64, error) {
	return run(ctx, s, lookup, func(ctx context.Context) (int64, error) {
		var v int64
		if err := s.r.QueryRowContext(ctx, qConfigVersion).Scan(&v); err != nil {
			return 0, s.fail(ctx, "configuration version", err)
		}
		return v, nil
	})
}

// inConfigTx runs fn in a write transaction that changes the configuration
// version with it (see inTx).
func (s *Store) inConfigTx(ctx context.Context, what string, fn func(tx *txn) error) error {
	return s.inTx(ctx, what, func(tx *txn) error {
		if err := fn(tx); err != nil {
			return err
		}
		return s.configChanged(ctx, tx)
	})
}

// configChanged gives the configuration a new version, in the transaction
// of the write that changes it, so that a reader who sees the version sees
// the write. The version is random rather than counted: a cache compares
// it for equality, and a database restored from a backup, or another
// instance's, cannot then repeat the version a node last saw.
func (s *Store) configChanged(ctx context.Context, tx queryer) error {
	if _, err := tx.ExecContext(ctx, bumpConfigVersion, rand.Int64()); err != nil {
		return s.fail(ctx, "configuration version", err)
	}
	return nil
}
