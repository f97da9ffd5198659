package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/server"
	"github.com/dpsd/dpsd/internal/server/servertest"
	"github.com/dpsd/dpsd/internal/store"
	"github.com/dpsd/dpsd/internal/testutil"
)

// target is a dpsd in process, with MQTT and the profiling endpoints, and
// the flags that point dpsd-load at it.
type testServer struct {
	*servertest.Server
	args []string
}

func startServer(t *testing.T) *testServer {
	t.Helper()
	s := servertest.Start(t, server.Config{MQTTAddr: "127.0.0.1:0", PprofAddr: "127.0.0.1:0", LogLevel: "info"})
	owner, err := s.Store().Policy(context.Background(), dps.OwnerPolicyName)
	if err != nil {
		t.Fatal(err)
	}
	ca := testutil.WriteFile(t, t.TempDir(), "server-ca.pem", s.Instance().ServerCACertPEM)
	login := "HostName=" + s.ServiceAddr + ";SharedAccessKeyName=" + owner.Name + ";SharedAccessKey=" + owner.PrimaryKey
	return &testServer{Server: s, args: []string{"--login", login, "--ca-file", ca, "--mqtt-endpoint", s.MQTTAddr}}
}

// load runs dpsd-load with args and returns its exit code, its report
// (--output json) and what it wrote on standard error.
func (s *testServer) load(t *testing.T, args ...string) (int, *Report, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := runMain(context.Background(), append(append([]string{"--output", "json"}, s.args...), args...), &stdout, &stderr)
	var r *Report
	if stdout.Len() > 0 {
		r = new(Report)
		if err := json.Unmarshal(stdout.Bytes(), r); err != nil {
			t.Fatalf("the report is not JSON: %v\n%s", err, stdout.String())
		}
	}
	return code, r, stderr.String()
}

// checkPhase checks what a phase that went well reports.
func checkPhase(t *testing.T, ph *Phase, name string, ops int64) {
	t.Helper()
	switch {
	case ph == nil:
		t.Fatalf("no %s phase in the report", name)
	case ph.Name != name || ph.Ops != ops || ph.Errors != 0 || ph.ErrorCodes != nil:
		t.Errorf("%s phase: %d ops, %d errors %v; want %d ops, no error", name, ph.Ops, ph.Errors, ph.ErrorCodes, ops)
	case ph.PerSecond <= 0 || ph.Seconds <= 0 || ph.Latency.P50 <= 0 || ph.Latency.P50 > ph.Latency.P90 || ph.Latency.P90 > ph.Latency.P99 || ph.Latency.P99 > ph.Latency.Max:
		t.Errorf("%s phase: rate %v/s over %vs, latency %+v", name, ph.PerSecond, ph.Seconds, ph.Latency)
	case ph.LoadGenerator == nil || ph.LoadGenerator.PID != os.Getpid():
		t.Errorf("%s phase: load generator usage %+v", name, ph.LoadGenerator)
	}
	// The server runs in this process: found from its listener.
	if runtime.GOOS == "linux" && (ph.Server == nil || ph.Server.PID != os.Getpid() || ph.Server.RSSMB <= 0) {
		t.Errorf("%s phase: server usage %+v, want this process's", name, ph.Server)
	}
}

func record(t *testing.T, st store.Store, id string) *store.Registration {
	t.Helper()
	r, err := st.Registration(context.Background(), id)
	if err != nil {
		t.Fatalf("registration record of %s: %v", id, err)
	}
	return r
}

// TestLoad runs each transport, attestation and connection mode against
// a server in process, and checks that the report counts what the server
// recorded.
func TestLoad(t *testing.T) {
	s := startServer(t)
	for _, tc := range []struct {
		name    string
		args    []string
		ops     int64
		devices int
		// substatus is what the devices' records say after the run: a
		// device registered once, or re-registered.
		substatus string
		rounds    int // in the report: 0 when the phases did not alternate
	}{
		{name: "https symmetric-key", args: []string{"--devices", "12"}, ops: 12, devices: 12, substatus: dps.SubstatusInitialAssignment},
		{name: "https x509", args: []string{"--attestation", "x509", "--devices", "6"}, ops: 6, devices: 6, substatus: dps.SubstatusInitialAssignment},
		{name: "https symmetric-key kept-alive", args: []string{"--keep-alive", "--devices", "12"}, ops: 12, devices: 12, substatus: dps.SubstatusInitialAssignment},
		{name: "https x509 kept-alive", args: []string{"--attestation", "x509", "--keep-alive", "--devices", "9", "--concurrency", "3"}, ops: 9, devices: 3,
			substatus: dps.SubstatusReprovisionedToInitialAssignment},
		{name: "mqtt x509", args: []string{"--transport", "mqtt", "--attestation", "x509", "--devices", "6"}, ops: 6, devices: 6, substatus: dps.SubstatusInitialAssignment},
		{name: "mqtt symmetric-key kept-alive", args: []string{"--transport", "mqtt", "--keep-alive", "--devices", "8", "--concurrency", "2"}, ops: 8, devices: 2,
			substatus: dps.SubstatusReprovisionedToInitialAssignment},
		{name: "paced", args: []string{"--rate", "500/s", "--devices", "5", "--concurrency", "2"}, ops: 5, devices: 5, substatus: dps.SubstatusInitialAssignment},
		// Rounds go on where the last one ended: every device registers
		// once, none twice.
		{name: "https x509 in rounds", args: []string{"--attestation", "x509", "--devices", "7", "--rounds", "3"}, ops: 7, devices: 7, substatus: dps.SubstatusInitialAssignment, rounds: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prefix := strings.NewReplacer(" ", "-").Replace(tc.name) + "-"
			code, r, stderr := s.load(t, append([]string{"--prefix", prefix, "--concurrency", "3"}, tc.args...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			checkPhase(t, r.Baseline, "baseline", tc.ops)
			checkPhase(t, r.Workload, "workload", tc.ops)
			if r.Ratio <= 0 || r.Devices != tc.devices {
				t.Errorf("ratio %v, %d devices; want a ratio, %d devices", r.Ratio, r.Devices, tc.devices)
			}
			if r.Rounds != tc.rounds {
				t.Errorf("rounds %d in the report, want %d", r.Rounds, tc.rounds)
			}
			for i := range tc.devices {
				if rec := record(t, s.Store(), fmt.Sprintf("%s%07d", prefix, i)); rec.Result.Status != dps.StatusAssigned || rec.Result.Substatus != tc.substatus {
					t.Errorf("device %d: %s %s, want assigned %s", i, rec.Result.Status, rec.Result.Substatus, tc.substatus)
				}
			}
			// What the run created is gone; the records stay.
			if _, err := s.Store().Group(context.Background(), prefix+"group"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("the run's group is still there: %v", err)
			}
		})
	}
}

// TestLoadFailsLoudly: when the server refuses the devices, or cannot be
// reached, dpsd-load reports the failures by errorCode (or kind) and exits
// 1 saying so; --max-errors tolerates some.
func TestLoadFailsLoudly(t *testing.T) {
	s := startServer(t)
	for _, tc := range []struct {
		name string
		args []string
		// code is the exit code; phase and key the failures expected.
		code       int
		phase, key string
		stderr     string
	}{
		{name: "refused https", args: []string{"--id-scope", "0ne00000BAD"}, code: 1, phase: "workload", key: "401002",
			stderr: "4 of 4 operations of the workload phase failed: 401002 ×4 (first: ID scope \"0ne00000BAD\" is not served here"},
		{name: "refused mqtt", args: []string{"--id-scope", "0ne00000BAD", "--transport", "mqtt", "--attestation", "x509"}, code: 1, phase: "workload", key: "401002",
			stderr: "4 of 4 operations of the workload phase failed: 401002 ×4"},
		{name: "tolerated", args: []string{"--id-scope", "0ne00000BAD", "--max-errors", "4"}, code: 1, phase: "workload", key: "401002",
			stderr: "no operation of the workload phase succeeded"},
		{name: "unreachable", args: []string{"--endpoint", "127.0.0.1:1"}, code: 1, phase: "baseline", key: "transport",
			stderr: "4 of 4 operations of the baseline phase failed: transport ×4 (first: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, r, stderr := s.load(t, append([]string{"--devices", "4", "--concurrency", "2"}, tc.args...)...)
			if code != tc.code || !strings.Contains(stderr, tc.stderr) {
				t.Errorf("exit %d, stderr:\n%s\nwant exit %d and %q", code, stderr, tc.code, tc.stderr)
			}
			if r == nil {
				t.Fatal("no report")
			}
			ph := r.Workload
			if tc.phase == "baseline" {
				ph = r.Baseline
			}
			if ph.Errors != 4 || ph.ErrorCodes[tc.key] != 4 || ph.ErrorSamples[tc.key] == "" || ph.PerSecond != 0 {
				t.Errorf("%s phase: %d errors %v %v, %v/s; want 4 × %s", tc.phase, ph.Errors, ph.ErrorCodes, ph.ErrorSamples, ph.PerSecond, tc.key)
			}
		})
	}
}

// TestLoadProfiles: with the server's pprof endpoint, the report has
// allocations per operation, and --profile-dir gets the workload's CPU and
// allocation profiles. It also runs a duration phase.
func TestLoadProfiles(t *testing.T) {
	s := startServer(t)
	dir := t.TempDir()
	code, r, stderr := s.load(t, "--duration", "1s", "--rate", "20/s", "--concurrency", "2", "--baseline=false",
		"--server-pprof", "http://"+s.PprofAddr(), "--profile-dir", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if r.Baseline != nil || r.Ratio != 0 {
		t.Errorf("a baseline with --baseline=false: %+v", r.Baseline)
	}
	ph := r.Workload
	if ph.Ops < 1 || ph.Errors != 0 || ph.OfferedPerSecond != 20 {
		t.Fatalf("workload: %d ops, %d errors, offered %v/s", ph.Ops, ph.Errors, ph.OfferedPerSecond)
	}
	if ph.Server == nil || ph.Server.AllocsPerOp <= 0 || ph.Server.AllocBytesPerOp <= 0 || ph.Server.ProfileError != "" {
		t.Fatalf("server usage %+v", ph.Server)
	}
	want := []string{filepath.Join(dir, "https-symmetric-key-new-allocs.pb.gz"), filepath.Join(dir, "https-symmetric-key-new-cpu.pb.gz")}
	if !slices.Equal(ph.Server.Profiles, want) {
		t.Errorf("profiles %v, want %v", ph.Server.Profiles, want)
	}
	for _, f := range want {
		// A profile is gzipped protocol buffers.
		if b := testutil.ReadFile(t, f); len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
			t.Errorf("%s is not gzip: % x", f, b[:min(len(b), 8)])
		}
	}
}

// TestLoadUsage: a bad command line exits 2 saying what is wrong.
func TestLoadUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{}, "--login is required"},
		{[]string{"--login", "x", "--transport", "amqp"}, `--transport "amqp": use https or mqtt`},
		{[]string{"--login", "x", "--attestation", "tpm"}, `--attestation "tpm"`},
		{[]string{"--login", "x", "--rate", "fast"}, `"fast" is not a rate such as 300/s`},
		{[]string{"--login", "x", "--profile-dir", "p"}, "--profile-dir needs --server-pprof and --duration"},
		{[]string{"--login", "x", "--concurrency", "0"}, "--concurrency 0"},
		{[]string{"--login", "x", "--rounds", "0"}, "--rounds 0: give 1 to 1000"},
		{[]string{"--login", "x", "--rounds", "5", "--devices", "4"}, "--rounds 5: more rounds than --devices 4"},
		{[]string{"--login", "x", "--rounds", "2", "--duration", "4s", "--server-pprof", "http://x", "--profile-dir", "p"}, "--profile-dir needs --rounds 1"},
		{[]string{"--login", "x", "--output", "yaml"}, `--output "yaml"`},
		{[]string{"--login", "x", "extra"}, `unexpected argument "extra"`},
		{[]string{"scale"}, "--dir is required"},
		{[]string{"scale", "--dir", "d", "--workloads", "tpm"}, `"tpm" is not symmetric-key or x509`},
		{[]string{"scale", "--dir", "d", "--enrollments", "5", "--registrations", "6"}, "at most one record per enrollment"},
	} {
		var stdout, stderr bytes.Buffer
		if code := runMain(context.Background(), tc.args, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want exit 2 and %q", tc.args, code, stderr.String(), tc.want)
		}
	}
}
