package main

import (
	"reflect"
	"testing"
	"time"
)

// TestPlanShare: the rounds' shares add up to the whole, and differ by at
// most one operation or nanosecond.
func TestPlanShare(t *testing.T) {
	for _, tc := range []struct {
		p      plan
		rounds int
	}{
		{plan{count: 10}, 3},
		{plan{count: 7}, 7},
		{plan{count: 1000}, 1},
		{plan{duration: 20 * time.Second}, 10},
		{plan{duration: time.Second}, 3},
	} {
		var count int
		var d time.Duration
		for r := range tc.rounds {
			s := tc.p.share(r, tc.rounds)
			if s.count < tc.p.count/tc.rounds || s.count > tc.p.count/tc.rounds+1 ||
				s.duration < tc.p.duration/time.Duration(tc.rounds) || s.duration > tc.p.duration/time.Duration(tc.rounds)+1 {
				t.Errorf("%+v in %d rounds: round %d gets %d operations, %s", tc.p, tc.rounds, r, s.count, s.duration)
			}
			count += s.count
			d += s.duration
		}
		if count != tc.p.count || d != tc.p.duration {
			t.Errorf("%+v in %d rounds: shares add up to %d operations, %s", tc.p, tc.rounds, count, d)
		}
	}
}

// TestMerge: a phase run in rounds reports its operations, failures and
// time added up, its latency over every operation, and each process's CPU
// over the rounds' time.
func TestMerge(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var d []time.Duration
		for _, x := range v {
			d = append(d, time.Duration(x)*time.Millisecond)
		}
		return d
	}
	runs := []phaseRun{
		{ph: &Phase{Name: "workload", Operation: "op", Ops: 4, Errors: 1, ErrorCodes: map[string]int64{"401002": 1}, ErrorSamples: map[string]string{"401002": "first"}, Seconds: 1,
			Server:        &Usage{PID: 7, CPUSeconds: 0.5, RSSMB: 30, PeakRSSMB: 40, AllocsPerOp: 100},
			LoadGenerator: &Usage{PID: 8, CPUSeconds: 0.25}},
			lat: ms(1, 2, 3, 4)},
		{ph: &Phase{Name: "workload", Operation: "op", Ops: 6, Errors: 1, ErrorCodes: map[string]int64{"401002": 1}, ErrorSamples: map[string]string{"401002": "second"}, Seconds: 3,
			Server:        &Usage{PID: 7, CPUSeconds: 1.5, RSSMB: 35, PeakRSSMB: 38, AllocsPerOp: 200},
			LoadGenerator: &Usage{PID: 8, CPUSeconds: 0.75}},
			lat: ms(5, 6, 7, 8, 9, 10)},
	}
	ph := merge(runs)
	if ph.Ops != 10 || ph.Errors != 2 || ph.ErrorCodes["401002"] != 2 || ph.ErrorSamples["401002"] != "first" || ph.Seconds != 4 || ph.PerSecond != 2 {
		t.Errorf("merged: %d ops, %d errors %v %v, %vs, %v/s", ph.Ops, ph.Errors, ph.ErrorCodes, ph.ErrorSamples, ph.Seconds, ph.PerSecond)
	}
	if ph.Latency != (Latency{P50: 5, P90: 9, P99: 10, Max: 10, Mean: 5.5}) {
		t.Errorf("latency %+v", ph.Latency)
	}
	if s := ph.Server; !reflect.DeepEqual(*s, Usage{PID: 7, CPUSeconds: 2, CPUPercent: 50, CPUPerOpMs: 200, RSSMB: 35, PeakRSSMB: 40, AllocsPerOp: 160}) {
		t.Errorf("server %+v", s)
	}
	if g := ph.LoadGenerator; g.CPUSeconds != 1 || g.CPUPercent != 25 || g.CPUPerOpMs != 100 {
		t.Errorf("load generator %+v", g)
	}
	// A round without the server's usage: none over the phase.
	runs[1].ph.Server = nil
	if ph := merge(runs); ph.Server != nil {
		t.Errorf("server usage %+v from rounds that did not all measure it", ph.Server)
	}
}
