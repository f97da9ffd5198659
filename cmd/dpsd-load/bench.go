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
	// rounds alternates the baseline and the workload this many times,
	// each round running a share of count or duration.
	rounds int
}

// share is round r's part of p, of rounds.
func (p plan) share(r, rounds int) plan {
	if rounds <= 1 {
		return p
	}
	p.count = p.count*(r+1)/rounds - p.count*r/rounds
	p.duration = p.duration*time.Duration(r+1)/time.Duration(rounds) - p.duration*time.Duration(r)/time.Duration(rounds)
	return p
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
	// The baseline runs as fast as it can: it is the ceiling a paced
	// workload is compared with.
	bp := p
	bp.rate = 0
	// With rounds, the phases alternate, each round running its share:
	// on a machine whose speed drifts (a VM), a baseline measured first
	// and a workload measured after it would see different machines.
	rounds := max(1, p.rounds)
	if rounds > 1 {
		rep.Rounds = rounds
	}
	var bRuns, wRuns []phaseRun
	for r := range rounds {
		if baseline {
			bRuns = append(bRuns, measure(ctx, "baseline", bOp, conns, conn.baseline, bp.share(r, rounds), mon, ops(bRuns)))
		}
		if workload {
			wRuns = append(wRuns, measure(ctx, "workload", wOp, conns, conn.register, p.share(r, rounds), mon, ops(wRuns)))
		}
	}
	if baseline {
		rep.Baseline = merge(bRuns)
	}
	if workload {
		rep.Workload = merge(wRuns)
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

// phaseRun is what one round of a phase measured: its phase, and the latency of
// each operation.
type phaseRun struct {
	ph  *Phase
	lat []time.Duration
}

// ops counts the operations of runs.
func ops(runs []phaseRun) int {
	n := 0
	for _, r := range runs {
		n += int(r.ph.Ops)
	}
	return n
}

// measure runs one phase (or one round of it): op on the connections, as
// many operations as p says, numbered from first, and returns what it
// measured.
func measure(ctx context.Context, name, what string, conns []conn, op func(conn, context.Context, int) error, p plan, mon *monitor, first int) phaseRun {
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
				jobs <- job{i: first + i, due: due}
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
				jobs <- job{i: first + i}
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
	return phaseRun{ph: ph, lat: all}
}

// merge is the phase of its rounds: their operations, failures and time
// added up, latencies over all of them, and each process's CPU over the
// rounds' time.
func merge(runs []phaseRun) *Phase {
	if len(runs) == 1 {
		return runs[0].ph
	}
	ph := &Phase{Name: runs[0].ph.Name, Operation: runs[0].ph.Operation, OfferedPerSecond: runs[0].ph.OfferedPerSecond,
		ErrorCodes: map[string]int64{}, ErrorSamples: map[string]string{}}
	var seconds float64
	var lat []time.Duration
	servers := make([]*Usage, len(runs))
	selves := make([]*Usage, len(runs))
	counts := make([]int64, len(runs))
	for i, r := range runs {
		ph.Ops += r.ph.Ops
		ph.Errors += r.ph.Errors
		for k, n := range r.ph.ErrorCodes {
			ph.ErrorCodes[k] += n
			if _, ok := ph.ErrorSamples[k]; !ok {
				ph.ErrorSamples[k] = r.ph.ErrorSamples[k]
			}
		}
		seconds += r.ph.Seconds
		lat = append(lat, r.lat...)
		servers[i], selves[i], counts[i] = r.ph.Server, r.ph.LoadGenerator, r.ph.Ops
	}
	if len(ph.ErrorCodes) == 0 {
		ph.ErrorCodes, ph.ErrorSamples = nil, nil
	}
	ph.Seconds = round(seconds, 6)
	if seconds > 0 {
		ph.PerSecond = round(float64(ph.Ops-ph.Errors)/seconds, 1)
	}
	ph.Latency = latencies(lat)
	ph.Server = mergeUsage(servers, counts, seconds)
	ph.LoadGenerator = mergeUsage(selves, counts, seconds)
	return ph
}

// mergeUsage is a process's usage over rounds of the given operations and
// total seconds; nil when a round did not measure it.
func mergeUsage(us []*Usage, counts []int64, seconds float64) *Usage {
	var m Usage
	var ops int64
	var allocs, bytes float64
	for i, u := range us {
		if u == nil {
			return nil
		}
		m.PID = u.PID
		m.CPUSeconds += u.CPUSeconds
		m.RSSMB = u.RSSMB
		m.PeakRSSMB = max(m.PeakRSSMB, u.PeakRSSMB)
		allocs += u.AllocsPerOp * float64(counts[i])
		bytes += u.AllocBytesPerOp * float64(counts[i])
		ops += counts[i]
	}
	m.CPUSeconds = round(m.CPUSeconds, 3)
	if seconds > 0 {
		m.CPUPercent = round(100*m.CPUSeconds/seconds, 1)
	}
	if ops > 0 {
		m.CPUPerOpMs = round(1000*m.CPUSeconds/float64(ops), 4)
		m.AllocsPerOp = round(allocs/float64(ops), 1)
		m.AllocBytesPerOp = round(bytes/float64(ops), 0)
	}
	return &m
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
