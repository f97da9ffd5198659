package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// plan is how much load a phase applies.
type plan struct {
	count       int           // operations per phase; 0 with a duration
	duration    time.Duration // or run each phase this long
	rate        float64       // operations started per second; 0: closed loop
	concurrency int
	timeout     time.Duration // of one operation
}

// target is what a benchmark measures: a transport, its devices, and how
// its connections are used.
type target interface {
	// operations describes the baseline's and the workload's operation.
	operations() (baseline, workload string)
	// open prepares worker w's connection (for kept-alive connections,
	// opens it: the phases do not measure that).
	open(ctx context.Context, w int, timeout time.Duration) (conn, error)
	// distinct is how many distinct devices the workload registers (0: one
	// per operation).
	distinct(p plan) int
}

// conn is one worker's connection (or, with a new connection per
// operation, the way to make one).
type conn interface {
	baseline(ctx context.Context, i int) error
	register(ctx context.Context, i int) error
	close()
}

func newTarget(transport string, keepAlive bool, endpoint, idScope string, roots *x509.CertPool, fl *fleet) target {
	if transport == "mqtt" {
		return &mqttTarget{endpoint: endpoint, host: hostOf(endpoint), idScope: idScope, roots: roots, fleet: fl, keepAlive: keepAlive}
	}
	return &httpsTarget{endpoint: endpoint, host: hostOf(endpoint), idScope: idScope, roots: roots, fleet: fl, keepAlive: keepAlive}
}

// benchmark opens the connections and runs the baseline phase, then the
// workload phase, on them, filling rep.
func benchmark(ctx context.Context, rep *Report, t target, p plan, mon *monitor, baseline, workload bool) error {
	conns := make([]conn, p.concurrency)
	errs := make([]error, p.concurrency)
	var wg sync.WaitGroup
	for w := range conns {
		wg.Go(func() { conns[w], errs[w] = t.open(ctx, w, p.timeout) })
	}
	wg.Wait()
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.close()
			}
		}
	}()
	for w, err := range errs {
		if err != nil {
			return fmt.Errorf("opening connection %d of %d: %w", w+1, len(conns), err)
		}
	}
	rep.Devices = t.distinct(p)
	bOp, wOp := t.operations()
	if baseline {
		// The baseline runs as fast as it can: it is the ceiling a paced
		// workload is compared with.
		bp := p
		bp.rate = 0
		rep.Baseline = measure(ctx, "baseline", bOp, conns, conn.baseline, bp, mon)
	}
	if workload {
		rep.Workload = measure(ctx, "workload", wOp, conns, conn.register, p, mon)
		if ops := int(rep.Workload.Ops); rep.Devices == 0 || rep.Devices > ops {
			rep.Devices = ops // a duration ended before the pool of devices
		}
	}
	if rep.Baseline != nil && rep.Workload != nil && rep.Baseline.PerSecond > 0 {
		rep.Ratio = math.Round(rep.Workload.PerSecond/rep.Baseline.PerSecond*1000) / 1000
	}
	return nil
}

// job is one operation to run: its number, and when it was due (paced
// phases; zero otherwise).
type job struct {
	i   int
	due time.Time
}

// measure runs one phase: op on the connections, as many operations as p
// says, and returns what it measured.
func measure(ctx context.Context, name, what string, conns []conn, op func(conn, context.Context, int) error, p plan, mon *monitor) *Phase {
	ph := &Phase{Name: name, Operation: what}
	tally := newTally()
	lat := make([][]time.Duration, len(conns))
	probe := mon.start(name, p.duration)
	start := time.Now()
	end := start.Add(p.duration)
	more := func(i int, now time.Time) bool {
		if p.count > 0 {
			return i < p.count
		}
		return now.Before(end)
	}
	jobs := make(chan job)
	if p.rate > 0 {
		ph.OfferedPerSecond = p.rate
		go func() {
			defer close(jobs)
			for i := 0; ; i++ {
				due := start.Add(time.Duration(float64(i) / p.rate * float64(time.Second)))
				if !more(i, due) || ctx.Err() != nil {
					return
				}
				time.Sleep(time.Until(due))
				// When every worker is busy this blocks: the wait counts in
				// the latency, which runs from when the operation was due.
				jobs <- job{i: i, due: due}
			}
		}()
	} else {
		var next atomic.Int64
		go func() {
			defer close(jobs)
			for {
				i := int(next.Add(1) - 1)
				if !more(i, time.Now()) || ctx.Err() != nil {
					return
				}
				jobs <- job{i: i}
			}
		}()
	}
	var wg sync.WaitGroup
	for w, c := range conns {
		wg.Go(func() {
			for j := range jobs {
				t0 := j.due
				if t0.IsZero() {
					t0 = time.Now()
				}
				octx, cancel := context.WithTimeout(ctx, p.timeout)
				err := op(c, octx, j.i)
				cancel()
				lat[w] = append(lat[w], time.Since(t0))
				tally.add(err)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	all := slices.Concat(lat...)
	ph.Ops = int64(len(all))
	ph.Errors, ph.ErrorCodes, ph.ErrorSamples = tally.result()
	ph.Seconds = round(elapsed.Seconds(), 6)
	ph.PerSecond = round(float64(ph.Ops-ph.Errors)/elapsed.Seconds(), 1)
	ph.Latency = latencies(all)
	ph.Server, ph.LoadGenerator = probe.stop(ph.Ops)
	return ph
}

// latencies summarizes durations: percentiles by nearest rank.
func latencies(d []time.Duration) Latency {
	if len(d) == 0 {
		return Latency{}
	}
	slices.Sort(d)
	ms := func(v time.Duration) float64 { return round(float64(v)/float64(time.Millisecond), 2) }
	pct := func(p float64) float64 {
		return ms(d[max(0, int(math.Ceil(p*float64(len(d))))-1)])
	}
	var sum time.Duration
	for _, v := range d {
		sum += v
	}
	return Latency{P50: pct(0.50), P90: pct(0.90), P99: pct(0.99), Max: ms(d[len(d)-1]), Mean: ms(sum / time.Duration(len(d)))}
}

func round(v float64, digits int) float64 {
	f := math.Pow(10, float64(digits))
	return math.Round(v*f) / f
}
