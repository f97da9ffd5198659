package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/dpsd/dpsd/client"
	clientmqtt "github.com/dpsd/dpsd/client/mqtt"
)

// Report is what one benchmark measured.
type Report struct {
	Transport   string `json:"transport"`
	Attestation string `json:"attestation"`
	// Connections is "new" (one per operation) or "kept-alive".
	Connections string `json:"connections"`
	Endpoint    string `json:"endpoint"`
	Concurrency int    `json:"concurrency"`
	// Devices is how many distinct devices the workload registered.
	Devices int `json:"devices"`
	// Rounds is how many times the phases alternated (--rounds).
	Rounds   int    `json:"rounds,omitempty"`
	Baseline *Phase `json:"baseline,omitempty"`
	Workload *Phase `json:"workload,omitempty"`
	// Ratio is the workload's rate over the baseline's.
	Ratio float64 `json:"ratio,omitempty"`
	// Note says what could not be measured, and why.
	Note string `json:"note,omitempty"`
}

// Phase is the measurement of one phase.
type Phase struct {
	Name      string `json:"name"`
	Operation string `json:"operation"`
	// Ops counts the operations run, failed ones included.
	Ops    int64 `json:"ops"`
	Errors int64 `json:"errors"`
	// ErrorCodes counts the failures by DPS errorCode, or by kind when
	// there is none ("HTTP 503", "CONNACK 0x05", "timeout", "transport").
	ErrorCodes map[string]int64 `json:"errorCodes,omitempty"`
	// ErrorSamples holds the first message of each.
	ErrorSamples map[string]string `json:"errorSamples,omitempty"`
	Seconds      float64           `json:"seconds"`
	// PerSecond is successful operations per second.
	PerSecond float64 `json:"perSecond"`
	// OfferedPerSecond is the pace asked for (--rate).
	OfferedPerSecond float64 `json:"offeredPerSecond,omitempty"`
	Latency          Latency `json:"latencyMs"`
	// Server is the server's process, when it runs on this machine;
	// LoadGenerator is dpsd-load's.
	Server        *Usage `json:"server,omitempty"`
	LoadGenerator *Usage `json:"loadGenerator,omitempty"`
}

// Latency holds percentiles in milliseconds, from the start of an operation
// (or, paced, from when it was due) to its answer.
type Latency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// Usage is what a process used during a phase.
type Usage struct {
	PID        int     `json:"pid"`
	CPUSeconds float64 `json:"cpuSeconds"`
	// CPUPercent is of one core: 200 is two cores busy.
	CPUPercent float64 `json:"cpuPercent"`
	CPUPerOpMs float64 `json:"cpuPerOpMs"`
	RSSMB      float64 `json:"rssMB"`
	PeakRSSMB  float64 `json:"peakRssMB"`
	// AllocsPerOp and AllocBytesPerOp come from the server's pprof
	// endpoint (--server-pprof): heap allocations of the whole process
	// during the phase, per operation.
	AllocsPerOp     float64 `json:"allocsPerOp,omitempty"`
	AllocBytesPerOp float64 `json:"allocBytesPerOp,omitempty"`
	// Profiles are the files written (--profile-dir).
	Profiles     []string `json:"profiles,omitempty"`
	ProfileError string   `json:"profileError,omitempty"`
}

// tally counts failures by kind.
type tally struct {
	mu      sync.Mutex
	n       int64
	codes   map[string]int64
	samples map[string]string
}

func newTally() *tally {
	return &tally{codes: map[string]int64{}, samples: map[string]string{}}
}

func (t *tally) add(err error) {
	if err == nil {
		return
	}
	k := errorKey(err)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n++
	t.codes[k]++
	if _, ok := t.samples[k]; !ok {
		t.samples[k] = err.Error()
	}
}

func (t *tally) result() (int64, map[string]int64, map[string]string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n == 0 {
		return 0, nil, nil
	}
	return t.n, t.codes, t.samples
}

// errorKey names the kind of a failure: the DPS errorCode the server
// answered, else the status or what broke.
func errorKey(err error) string {
	var se *client.StatusError
	var de *client.Error
	var ce *clientmqtt.ConnectError
	var te *transportError
	var ne net.Error
	switch {
	case errors.As(err, &se):
		if se.State.ErrorCode != 0 {
			return strconv.Itoa(se.State.ErrorCode)
		}
		return "status " + se.State.Status
	case errors.As(err, &de):
		if de.ErrorCode != 0 {
			return strconv.Itoa(de.ErrorCode)
		}
		return fmt.Sprintf("HTTP %d", de.StatusCode)
	case errors.As(err, &ce):
		return fmt.Sprintf("CONNACK %#02x", ce.ReturnCode)
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.As(err, &te):
		return "transport"
	}
	return "client"
}

// summary lists the failures of a phase, most frequent first.
func (ph *Phase) summary() string {
	keys := make([]string, 0, len(ph.ErrorCodes))
	for k := range ph.ErrorCodes {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if c := ph.ErrorCodes[b] - ph.ErrorCodes[a]; c != 0 {
			return int(c)
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s ×%d (first: %s)", k, ph.ErrorCodes[k], ph.ErrorSamples[k])
	}
	return strings.Join(parts, "; ")
}

func (r *Report) phases() []*Phase {
	var out []*Phase
	for _, ph := range []*Phase{r.Baseline, r.Workload} {
		if ph != nil {
			out = append(out, ph)
		}
	}
	return out
}

// check fails when a phase failed more operations than allowed, or none
// succeeded.
func (r *Report) check(maxErrors int64) error {
	var errs []error
	for _, ph := range r.phases() {
		switch {
		case ph.Errors > maxErrors:
			errs = append(errs, fmt.Errorf("%d of %d operations of the %s phase failed: %s", ph.Errors, ph.Ops, ph.Name, ph.summary()))
		case ph.Ops == ph.Errors:
			errs = append(errs, fmt.Errorf("no operation of the %s phase succeeded", ph.Name))
		}
	}
	return errors.Join(errs...)
}

func (r *Report) write(w io.Writer, format string) error {
	if format == "json" {
		return writeJSON(w, r)
	}
	r.writeTable(w)
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (r *Report) title() string {
	conns := "a new connection per operation"
	if r.Connections == "kept-alive" {
		conns = "kept-alive connections"
	}
	t := fmt.Sprintf("%s %s, %s, concurrency %d, %d devices, endpoint %s", r.Transport, r.Attestation, conns, r.Concurrency, r.Devices, r.Endpoint)
	if r.Rounds > 1 {
		t += fmt.Sprintf(", %d rounds", r.Rounds)
	}
	return t
}

func (r *Report) writeTable(w io.Writer) {
	fmt.Fprintln(w, r.title())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PHASE\tOPERATION\tOPS\tERRORS\tSECONDS\tPER SECOND\tP50 MS\tP90 MS\tP99 MS\tMAX MS\tSERVER CPU %\tCPU MS/OP\tRSS MB\tALLOCS/OP\tLOADGEN CPU %")
	for _, ph := range r.phases() {
		rate := fmt.Sprintf("%.1f", ph.PerSecond)
		if ph.OfferedPerSecond > 0 {
			rate += fmt.Sprintf(" (paced %g)", ph.OfferedPerSecond)
		}
		cpu, perOp, rss, allocs, gen := "-", "-", "-", "-", "-"
		if s := ph.Server; s != nil {
			cpu, perOp, rss = fmt.Sprintf("%.0f", s.CPUPercent), fmt.Sprintf("%.3f", s.CPUPerOpMs), fmt.Sprintf("%.1f", s.RSSMB)
			if s.AllocsPerOp > 0 {
				allocs = fmt.Sprintf("%.0f", s.AllocsPerOp)
			}
		}
		if g := ph.LoadGenerator; g != nil {
			gen = fmt.Sprintf("%.0f", g.CPUPercent)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.2f\t%s\t%.2f\t%.2f\t%.2f\t%.2f\t%s\t%s\t%s\t%s\t%s\n", ph.Name, ph.Operation, ph.Ops, ph.Errors,
			ph.Seconds, rate, ph.Latency.P50, ph.Latency.P90, ph.Latency.P99, ph.Latency.Max, cpu, perOp, rss, allocs, gen)
	}
	tw.Flush()
	switch {
	case r.Baseline != nil && r.Workload != nil:
		fmt.Fprintf(w, "ratio %.3f (workload %.1f/s over baseline %.1f/s)\n", r.Ratio, r.Workload.PerSecond, r.Baseline.PerSecond)
	case r.Workload != nil:
		fmt.Fprintln(w, "ratio: no baseline measured (--baseline=false)")
	default:
		fmt.Fprintln(w, "ratio: the baseline only (--handshake-only)")
	}
	for _, ph := range r.phases() {
		if ph.Errors > 0 {
			fmt.Fprintf(w, "%s errors: %s\n", ph.Name, ph.summary())
		}
		if s := ph.Server; s != nil {
			for _, p := range s.Profiles {
				fmt.Fprintf(w, "%s profile: %s\n", ph.Name, p)
			}
			if s.ProfileError != "" {
				fmt.Fprintf(w, "%s profiles: %s\n", ph.Name, s.ProfileError)
			}
		}
	}
	if r.Note != "" {
		fmt.Fprintln(w, "note:", r.Note)
	}
}
