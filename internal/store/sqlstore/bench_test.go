package sqlstore

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/dpsd/dpsd/internal/testutil"
)

// BenchmarkSaveRegistrationConcurrent is BenchmarkSaveRegistration with as
// many concurrent writers as a loaded server has registrations in flight:
// with one writer and one fsync per commit, they queue.
func BenchmarkSaveRegistrationConcurrent(b *testing.B) {
	for _, writers := range []int{8, 32} {
		b.Run(fmt.Sprintf("writers-%d", writers), func(b *testing.B) {
			benchSaveParallel(b, max(1, writers/runtime.GOMAXPROCS(0)))
		})
	}
}

// benchSaveParallel saves first registrations from parallelism ×
// GOMAXPROCS goroutines.
func benchSaveParallel(b *testing.B, parallelism int) {
	b.ReportAllocs()
	s := openSQLite(b, Options{})
	ctx := context.Background()
	var n atomic.Int64
	b.SetParallelism(parallelism)
	defer testutil.CPUPerOp(b)()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			r := benchRegistration(i)
			if _, err := s.SaveRegistration(ctx, r, "", benchOp(fmt.Sprintf("op-%d", i), r)); err != nil {
				b.Fatal(err)
			}
		}
	})
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
