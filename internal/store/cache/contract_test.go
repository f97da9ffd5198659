package cache_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/store"
	"github.com/dpsd/dpsd/internal/store/cache"
	"github.com/dpsd/dpsd/internal/store/sqlstore"
	"github.com/dpsd/dpsd/internal/store/storetest"
)

// TestContract runs the store's contract suite through a cache that syncs
// before each lookup it serves: synced, the cache answers as the store does,
// with copies the caller may change.
func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return &synced{cache.New(openStore(t, filepath.Join(t.TempDir(), "dpsd.db")))}
	})
}

// TestContractPostgres runs it on PostgreSQL.
func TestContractPostgres(t *testing.T) {
	dsn := storetest.PostgresDSN(t)
	storetest.Run(t, func(t *testing.T) store.Store {
		return &synced{cache.New(openStore(t, storetest.PostgresSchema(t, dsn)))}
	})
}

func openStore(t testing.TB, dsn string) *sqlstore.Store {
	t.Helper()
	s, err := sqlstore.Open(context.Background(), dsn, sqlstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// synced syncs its cache before every lookup the cache serves.
type synced struct{ *cache.Cache }

func (s *synced) sync(ctx context.Context) error { return s.Sync(ctx) }

func (s *synced) Instance(ctx context.Context) (*store.Instance, error) {
	if err := s.sync(ctx); err != nil {
		return nil, err
	}
	return s.Cache.Instance(ctx)
}

func (s *synced) LinkedHubs(ctx context.Context) ([]*store.LinkedHub, error) {
	if err := s.sync(ctx); err != nil {
		return nil, err
	}
	return s.Cache.LinkedHubs(ctx)
}

func (s *synced) SymmetricKeyGroups(ctx context.Context) ([]*dps.EnrollmentGroup, error) {
	if err := s.sync(ctx); err != nil {
		return nil, err
	}
	return s.Cache.SymmetricKeyGroups(ctx)
}

func (s *synced) Group(ctx context.Context, id string) (*dps.EnrollmentGroup, error) {
	if err := s.sync(ctx); err != nil {
		return nil, err
	}
	return s.Cache.Group(ctx, id)
}

func (s *synced) GroupsBySigningCert(ctx context.Context, tp string) ([]*dps.EnrollmentGroup, error) {
	if err := s.sync(ctx); err != nil {
		return nil, err
	}
	return s.Cache.GroupsBySigningCert(ctx, tp)
}

func (s *synced) GroupsByCA(ctx context.Context, name string) ([]*dps.EnrollmentGroup, error) {
	if err := s.sync(ctx); err != nil {
		return nil, err
	}
	return s.Cache.GroupsByCA(ctx, name)
}

func (s *synced) CACertificatesByThumbprint(ctx context.Context, tp string) ([]*store.CACertificate, error) {
	if err := s.sync(ctx); err != nil {
		return nil, err
	}
	return s.Cache.CACertificatesByThumbprint(ctx, tp)
}

func (s *synced) CACertificatesBySubject(ctx context.Context, subject []byte) ([]*store.CACertificate, error) {
	if err := s.sync(ctx); err != nil {
		return nil, err
	}
	return s.Cache.CACertificatesBySubject(ctx, subject)
}

func (s *synced) SigningCertsBySubject(ctx context.Context, subject []byte) ([][]byte, error) {
	if err := s.sync(ctx); err != nil {
		return nil, err
	}
	return s.Cache.SigningCertsBySubject(ctx, subject)
}
