package sqlstore

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/store/storetest"
	"github.com/dpsd/dpsd/internal/testutil"
)

// BenchmarkSaveRegistrationConcurrent is BenchmarkSaveRegistration with as
// many concurrent writers as a loaded server has registrations in flight:
// their writes are committed together (commit.go), and writes/commit says
// how many share a commit on average. On PostgreSQL too when the tests
// have a server (DPS_TEST_PG_DSN; scripts/pg-throwaway.sh, whose server
// does not fsync).
func BenchmarkSaveRegistrationConcurrent(b *testing.B) {
	engines := map[string]func(b *testing.B, opts Options) *Store{
		"sqlite": func(b *testing.B, opts Options) *Store { return openSQLite(b, opts) },
	}
	if dsn := os.Getenv("DPS_TEST_PG_DSN"); dsn != "" {
		engines["postgres"] = func(b *testing.B, opts Options) *Store {
			s, err := Open(context.Background(), storetest.PostgresSchema(b, dsn), opts)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			return s
		}
	}
	for _, engine := range []string{"sqlite", "postgres"} {
		open := engines[engine]
		if open == nil {
			continue
		}
		for _, writers := range []int{8, 32} {
			b.Run(fmt.Sprintf("%s/writers-%d", engine, writers), func(b *testing.B) {
				benchSaveParallel(b, open, max(1, writers/runtime.GOMAXPROCS(0)))
			})
		}
	}
}

// benchSaveParallel saves first registrations from parallelism ×
// GOMAXPROCS goroutines.
func benchSaveParallel(b *testing.B, open func(b *testing.B, opts Options) *Store, parallelism int) {
	b.ReportAllocs()
	var commits, writes atomic.Int64
	s := open(b, Options{ObserveBatch: func(n int) { commits.Add(1); writes.Add(int64(n)) }})
	ctx := context.Background()
	var n atomic.Int64
	b.SetParallelism(parallelism)
	defer testutil.CPUPerOp(b)()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			r := benchRegistration(i)
			if _, err := s.SaveRegistration(ctx, r, "", benchOp(dps.NewOperationID(0), r)); err != nil {
				b.Fatal(err)
			}
		}
	})
	if c := commits.Load(); c > 0 {
		b.ReportMetric(float64(writes.Load())/float64(c), "writes/commit")
	}
}

// BenchmarkSaveRegistrationUpdate is a re-registration: a record replaced
// under its etag, with a new operation.
func BenchmarkSaveRegistrationUpdate(b *testing.B) {
	b.ReportAllocs()
	s := openSQLite(b, Options{})
	ctx := context.Background()
	const devices = 100
	etags := make([]string, devices)
	for i := range devices {
		r := benchRegistration(int64(i))
		stored, err := s.SaveRegistration(ctx, r, "", benchOp(fmt.Sprintf("first-%d", i), r))
		if err != nil {
			b.Fatal(err)
		}
		etags[i] = stored.Result.Etag
	}
	n := 0
	defer testutil.CPUPerOp(b)()
	for b.Loop() {
		i := n % devices
		n++
		r := benchRegistration(int64(i))
		stored, err := s.SaveRegistration(ctx, r, etags[i], benchOp(fmt.Sprintf("op-%d", n), r))
		if err != nil {
			b.Fatal(err)
		}
		etags[i] = stored.Result.Etag
	}
}

// BenchmarkLookup measures the reads every registration makes by a unique
// key: its record, and the configuration version the cache checks.
func BenchmarkLookup(b *testing.B) {
	s := openSQLite(b, Options{})
	ctx := context.Background()
	r := benchRegistration(1)
	if _, err := s.SaveRegistration(ctx, r, "", benchOp(dps.NewOperationID(0), r)); err != nil {
		b.Fatal(err)
	}
	b.Run("registration", func(b *testing.B) {
		b.ReportAllocs()
		defer testutil.CPUPerOp(b)()
		for b.Loop() {
			if _, err := s.Registration(ctx, r.Result.RegistrationID); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("config-version", func(b *testing.B) {
		b.ReportAllocs()
		defer testutil.CPUPerOp(b)()
		for b.Loop() {
			if _, err := s.ConfigVersion(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}
