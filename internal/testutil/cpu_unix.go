//go:build unix

package testutil

import (
	"syscall"
	"testing"
	"time"
)

// CPUPerOp reports the benchmark's CPU time per operation (user and system,
// every goroutine of the process: GC and the database's included) as the
// metric cpu-ns/op, when the returned function runs at the end of the
// benchmark. On a machine shared with other work, wall time per operation
// varies with the load; CPU time per operation much less.
//
//	defer testutil.CPUPerOp(b)()
func CPUPerOp(b *testing.B) func() {
	start := cpuTime()
	return func() {
		if b.N > 0 {
			b.ReportMetric(float64((cpuTime()-start).Nanoseconds())/float64(b.N), "cpu-ns/op")
		}
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
