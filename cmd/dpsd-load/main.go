// Command dpsd-load is the benchmark of a provisioning service (dpsd, or any
// DPS): it registers many device identities over HTTPS or MQTT and reports
// the rate, latency percentiles, errors by errorCode and, when the server
// runs on the same machine, the server's CPU time and memory. Beside every
// workload it measures a baseline in the same run, with the same
// certificates and the same client stack: a fresh TLS connection with a
// trivial answer (GET /healthz, or MQTT CONNECT/CONNACK) per device, or a
// trivial answer on the same kept-alive connections. The ratio of the two
// says how close registration comes to the cost of TLS itself.
//
//	dpsd-load --login "$(dpsd info serviceConnectionString)" --ca-file dpsd-data/server-ca.pem \
//	    --attestation x509 --devices 2000 --concurrency 8
//
// It creates what it needs through the service API (a symmetric-key group,
// or a root CA uploaded as verified and a group referencing it), links a hub
// if none is linked, and deletes the group and the CA afterwards. It exits 1
// when a request fails (--max-errors tolerates some), saying how many failed
// and with which errorCode.
//
// `dpsd-load scale` builds an instance of a million enrollments and
// registration records through `dpsd import` and measures start-up time,
// memory and registration throughput of `dpsd serve` on it (see scale.go).
package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/svcclient"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(runMain(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// runMain runs the command line args and returns the exit code: 0, 1 when
// the benchmark failed (errors, nothing measured), 2 for bad usage.
func runMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var err error
	if len(args) > 0 && args[0] == "scale" {
		var o scaleOptions
		if o, err = parseScaleFlags(args[1:], stderr); err == nil {
			err = runScale(ctx, o, stdout, stderr)
		}
	} else {
		var o options
		if o, err = parseFlags(args, stderr); err == nil {
			err = run(ctx, o, stdout)
		}
	}
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintln(stderr, "dpsd-load:", err)
		return 2
	}
	fmt.Fprintln(stderr, "dpsd-load: error:", err)
	return 1
}

// usageError is a bad command line.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// options are the flags of a benchmark run.
type options struct {
	login, caFile           string
	endpoint, mqttEndpoint  string
	idScope                 string
	transport, attestation  string
	keepAlive               bool
	load                    loadFlags
	prefix                  string
	noCleanup               bool
	serverPID               int
	serverPprof, profileDir string
}

// loadFlags are the flags the benchmark and the scale command share: how
// much load, at what pace, and how to report it.
type loadFlags struct {
	devices, concurrency int
	duration, timeout    time.Duration
	rate                 rate
	baseline             bool
	handshakeOnly        bool
	rounds               int
	maxErrors            int64
	output               string
}

func (l *loadFlags) add(fs *flag.FlagSet, devicesUsage string) {
	fs.IntVar(&l.devices, "devices", 1000, devicesUsage)
	fs.IntVar(&l.concurrency, "concurrency", 8, "concurrent devices (workers); with --keep-alive, connections")
	fs.DurationVar(&l.duration, "duration", 0, "run each phase for this long (e.g. 30s) instead of --devices operations")
	fs.Var(&l.rate, "rate", "pace the workload at this many registrations per second (e.g. 300/s; latency counts from when each was due); default: as fast as --concurrency allows")
	fs.BoolVar(&l.baseline, "baseline", true, "measure the baseline first, in the same run with the same devices, and print the ratio")
	fs.BoolVar(&l.handshakeOnly, "handshake-only", false, "measure the baseline only")
	fs.IntVar(&l.rounds, "rounds", 1, "alternate the baseline and the workload in this many rounds, each a share of --devices or --duration, so that a machine whose speed drifts during the run slows both alike")
	fs.Int64Var(&l.maxErrors, "max-errors", 0, "failed requests tolerated before exiting 1")
	fs.DurationVar(&l.timeout, "timeout", 30*time.Second, "time limit of one registration (or baseline request)")
	fs.StringVar(&l.output, "output", "table", "table or json")
}

func (l *loadFlags) check() error {
	switch {
	case l.devices < 1:
		return usagef("--devices %d: give at least 1", l.devices)
	case l.concurrency < 1 || l.concurrency > 10000:
		return usagef("--concurrency %d: give 1 to 10000", l.concurrency)
	case l.duration < 0:
		return usagef("--duration %s is negative", l.duration)
	case l.timeout <= 0:
		return usagef("--timeout %s: give a positive duration", l.timeout)
	case l.rounds < 1 || l.rounds > 1000:
		return usagef("--rounds %d: give 1 to 1000", l.rounds)
	case l.duration == 0 && l.rounds > l.devices:
		return usagef("--rounds %d: more rounds than --devices %d", l.rounds, l.devices)
	case l.output != "table" && l.output != "json":
		return usagef("--output %q: use table or json", l.output)
	}
	return nil
}

func (l *loadFlags) plan() plan {
	p := plan{duration: l.duration, rate: float64(l.rate), concurrency: l.concurrency, timeout: l.timeout, rounds: l.rounds}
	if p.duration == 0 {
		p.count = l.devices
	}
	return p
}

// rate is --rate: registrations per second, given as N or N/s.
type rate float64

func (r *rate) String() string {
	if *r == 0 {
		return ""
	}
	return strconv.FormatFloat(float64(*r), 'f', -1, 64) + "/s"
}

func (r *rate) Set(s string) error {
	v, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(s), "/s"), 64)
	if err != nil || v <= 0 || v > 1e6 {
		return fmt.Errorf("%q is not a rate such as 300/s", s)
	}
	*r = rate(v)
	return nil
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("dpsd-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.login, "login", os.Getenv("DPSD_LOGIN"), "service connection string (DPSD_LOGIN)")
	fs.StringVar(&o.caFile, "ca-file", os.Getenv("DPSD_CA_FILE"), "server CA PEM (DPSD_CA_FILE)")
	fs.StringVar(&o.endpoint, "endpoint", "", "device endpoint host:port of HTTPS (default: the service endpoint)")
	fs.StringVar(&o.mqttEndpoint, "mqtt-endpoint", "", "MQTT-over-TLS endpoint host:port (default: the host of --endpoint, port 8883)")
	fs.StringVar(&o.idScope, "id-scope", "", "ID scope (default: read from the service's /settings)")
	fs.StringVar(&o.transport, "transport", "https", "https or mqtt (MQTT 3.1.1 over TLS)")
	fs.StringVar(&o.attestation, "attestation", "symmetric-key", "symmetric-key (a device key derived from a group key) or x509 (a CA-issued P-256 leaf, group via a verified CA)")
	fs.BoolVar(&o.keepAlive, "keep-alive", false, "keep connections alive: each worker opens one connection and sends every request on it (x509 and MQTT: one device per connection, re-registering)")
	o.load.add(fs, "registrations per phase, one device identity each (with --duration: the number of X.509 identities made beforehand and reused in turn)")
	fs.StringVar(&o.prefix, "prefix", "", "registration ID prefix (default: random)")
	fs.BoolVar(&o.noCleanup, "no-cleanup", false, "keep the enrollment group and CA certificate the run created")
	fs.IntVar(&o.serverPID, "server-pid", 0, "process ID of the server, for its CPU and memory (default: the local process listening on the endpoint, if any)")
	fs.StringVar(&o.serverPprof, "server-pprof", "", "base URL of the server's pprof endpoint (dpsd serve --pprof-addr), for allocations per operation")
	fs.StringVar(&o.profileDir, "profile-dir", "", "save CPU and allocation profiles of the workload phase here (needs --server-pprof and --duration)")
	usage := "Usage: dpsd-load --login CONNECTION-STRING [flags]\n       dpsd-load scale --dir DIR [flags]\n\nRegisters devices with a provisioning service over HTTPS or MQTT after a baseline measured in the\nsame run, and reports rates, latencies, errors and the ratio (docs/benchmarks.md).\n\n"
	if err := parse(fs, args, usage); err != nil {
		return o, err
	}
	if err := o.load.check(); err != nil {
		return o, err
	}
	switch {
	case o.login == "":
		return o, usagef("--login is required (dpsd info prints the service connection string)")
	case o.transport != "https" && o.transport != "mqtt":
		return o, usagef("--transport %q: use https or mqtt", o.transport)
	case o.attestation != "symmetric-key" && o.attestation != "x509":
		return o, usagef("--attestation %q: use symmetric-key or x509", o.attestation)
	case o.profileDir != "" && (o.serverPprof == "" || o.load.duration == 0):
		return o, usagef("--profile-dir needs --server-pprof and --duration (the profiles cover the workload phase)")
	case o.profileDir != "" && o.load.rounds > 1:
		return o, usagef("--profile-dir needs --rounds 1 (the profiles cover the workload phase in one piece)")
	}
	return o, nil
}

// parse parses args with fs, whose usage starts with usage: -h is
// flag.ErrHelp, anything wrong a usageError.
func parse(fs *flag.FlagSet, args []string, usage string) error {
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

func run(ctx context.Context, o options, stdout io.Writer) error {
	var ca []byte
	if o.caFile != "" {
		b, err := os.ReadFile(o.caFile)
		if err != nil {
			return err
		}
		ca = b
	}
	svc, err := svcclient.New(o.login, ca)
	if err != nil {
		return err
	}
	if o.endpoint == "" {
		o.endpoint = svc.Host()
	}
	if o.mqttEndpoint == "" {
		host, _, err := net.SplitHostPort(o.endpoint)
		if err != nil {
			return usagef("--endpoint %q is not host:port", o.endpoint)
		}
		o.mqttEndpoint = net.JoinHostPort(host, "8883")
	}
	if o.idScope == "" {
		var settings dps.Settings
		if _, err := svc.Do(ctx, svcclient.Request{Method: "GET", Path: "/settings"}, &settings); err != nil {
			return fmt.Errorf("reading /settings: %w", err)
		}
		o.idScope = settings.IDScope
	}
	if o.prefix == "" {
		o.prefix = fmt.Sprintf("load-%d-", time.Now().UnixNano()%1e9)
	}
	if err := ensureHub(ctx, svc); err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if ca != nil {
		roots.AppendCertsFromPEM(ca)
	}
	p := o.load.plan()
	// X.509 identities are made beforehand (a key pair and a certificate
	// each is client CPU the measurement should not pay).
	pool := o.load.devices
	if o.keepAlive && (o.attestation == "x509" || o.transport == "mqtt") {
		pool = o.load.concurrency
	}
	fl, cleanup, err := prepare(ctx, svc, o.prefix, o.attestation, pool)
	if err != nil {
		return err
	}
	if !o.noCleanup {
		defer cleanup()
	}
	endpoint := o.endpoint
	if o.transport == "mqtt" {
		endpoint = o.mqttEndpoint
	}
	t := newTarget(o.transport, o.keepAlive, endpoint, o.idScope, roots, fl)
	mon, note := newMonitor(o.serverPID, endpoint, o.serverPprof, o.profileDir)
	mon.label = o.transport + "-" + o.attestation + "-" + connections(o.keepAlive)
	rep := &Report{
		Transport: o.transport, Attestation: o.attestation, Connections: connections(o.keepAlive),
		Endpoint: endpoint, Concurrency: p.concurrency, Note: note,
	}
	if err := benchmark(ctx, rep, t, p, mon, o.load.baseline || o.load.handshakeOnly, !o.load.handshakeOnly); err != nil {
		return err
	}
	return finish(rep, o.load, stdout)
}

// finish prints the report and fails when it shows errors.
func finish(rep *Report, l loadFlags, stdout io.Writer) error {
	if err := rep.write(stdout, l.output); err != nil {
		return err
	}
	return rep.check(l.maxErrors)
}

func connections(keepAlive bool) string {
	if keepAlive {
		return "kept-alive"
	}
	return "new"
}

func ensureHub(ctx context.Context, svc *svcclient.Client) error {
	var hubs dps.LinkedHubList
	if _, err := svc.Do(ctx, svcclient.Request{Method: "GET", Path: "/linkedHubs"}, &hubs); err != nil {
		return err
	}
	if len(hubs.Value) > 0 {
		return nil
	}
	_, err := svc.Do(ctx, svcclient.Request{Method: "PUT", Path: "/linkedHubs/load-hub.azure-devices.net", Body: dps.LinkedHubBody{}}, nil)
	return err
}
