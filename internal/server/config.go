// Package server wires a dpsd instance together: the store, the instance
// identity, TLS, the device and service APIs behind one or two HTTPS
// listeners, health, metrics and graceful shutdown.
package server

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/dpsd/dpsd/internal/attest"
	"github.com/dpsd/dpsd/internal/journal"
	"github.com/dpsd/dpsd/internal/limits"
	"github.com/dpsd/dpsd/internal/metrics"
	"github.com/dpsd/dpsd/internal/mqtt"
	"github.com/dpsd/dpsd/internal/provisioning"
	"github.com/dpsd/dpsd/internal/store/sqlstore"
)

// Config is everything `dpsd serve` can be told. Flags, DPSD_* environment
// variables and an optional JSON config file fill it (see internal/cli),
// starting from Defaults.
type Config struct {
	// DataDir holds the embedded database, the server CA file a client must
	// trust (server-ca.pem) and server.json with the endpoints. Created 0700.
	DataDir string
	// Store is the database: empty for SQLite in DataDir, or a DSN
	// (postgres://...).
	Store string
	// StoreMaxConns bounds this node's PostgreSQL connections.
	StoreMaxConns int
	// StoreTimeout bounds each database call, waiting for a connection and
	// retries included; a call that runs out of time answers 503.
	StoreTimeout time.Duration
	// StoreRetries is how many times a transient PostgreSQL failure is
	// retried; 0 (or less) turns retries off, as --store-retries 0 does.
	StoreRetries int
	// StoreConnLifetime recycles PostgreSQL connections, so that a
	// fail-over or a DNS change is picked up.
	StoreConnLifetime time.Duration
	// SkipMigrate refuses a database schema older than this binary instead
	// of migrating it at start, for deployments that run `dpsd migrate`
	// as an explicit upgrade step.
	SkipMigrate bool
	// HTTPSAddr serves the device API, and the service API unless ServiceAddr
	// is set.
	HTTPSAddr string
	// ServiceAddr moves the service API to its own listener.
	ServiceAddr string
	// MetricsAddr serves /metrics and /healthz over plain HTTP on a
	// listener of their own; then no other listener serves metrics.
	// Without it, metrics are served on the listener of the service API.
	MetricsAddr string
	// MQTTAddr serves the device API over MQTT 3.1.1 with TLS (empty: no
	// MQTT listener). MQTT over WebSocket is always served on the HTTPS
	// listener at /$iothub/websocket.
	MQTTAddr string
	// MaxConns caps the connections each listener holds open, and
	// MaxConnsPerIP those from one source address (an IPv6 /64). A
	// connection over a cap is closed at accept (internal/connlimit).
	MaxConns, MaxConnsPerIP int
	// HandshakeTimeout bounds how long a new connection may take to
	// complete its TLS handshake and send its first request (HTTPS) or
	// its CONNECT (MQTT).
	HandshakeTimeout time.Duration
	// MQTTIdleTimeout closes an MQTT connection that sends no register or
	// operation-status request for this long (after CONNECT, or after the
	// last answer and the retry-after it carried); keep-alive 0 included.
	MQTTIdleTimeout time.Duration
	// HostNames are added to the server certificate; the first is the host
	// name advertised in endpoints and connection strings (default localhost).
	HostNames []string
	// TLSCertFile and TLSKeyFile replace the generated server certificate.
	TLSCertFile string
	TLSKeyFile  string
	// CRLBaseURL is the URL hubs and brokers reach the service listener at
	// (https://dps.example.com:8443). When set, the certificates dpsd
	// issues name their CA's CRL there (CRL distribution point).
	CRLBaseURL string
	// AzureStrict answers every register with "assigning" first, as Azure
	// does, for firmware that must exercise its polling path.
	AzureStrict bool
	// RetryAfter is the Retry-After (seconds) of an "assigning" answer.
	RetryAfter int
	// AssignWait is how long a register request waits for an assignment
	// that calls out (a hub's device registry, a custom allocation
	// webhook) before it answers "assigning" and lets the device poll.
	AssignWait time.Duration
	// AssignTimeout bounds such an assignment, hub calls and retries
	// included; it then fails. An assignment whose node stopped is taken
	// over by another node (or this one, restarted) after twice this.
	AssignTimeout time.Duration
	// OutboundCAFile names PEM certificates trusted, besides the system
	// roots, by every call dpsd makes: hubs' registry APIs, registry
	// webhooks, custom allocation webhooks.
	OutboundCAFile string
	// Location is this node's location, as the linked hubs name theirs
	// (westeurope), for geoLatency allocation.
	Location string
	// MinRSABits and MinECBits are the weakest keys a device certificate,
	// or a CA certificate of its chain, may have; MaxChainLength is the
	// most certificates a device may present (attest.Attestor).
	MinRSABits, MinECBits, MaxChainLength int
	// MaxSASLifetime, when positive, refuses SAS tokens, of devices and of
	// the service API, that stay valid longer than this from now.
	MaxSASLifetime time.Duration
	// ProtectEnrollmentKeys makes enrollment and group keys readable only
	// with EnrollmentWrite (serviceapi.Config).
	ProtectEnrollmentKeys bool
	// ThrottleRegistrations, ThrottlePolls and ThrottleService are rates
	// ("1000/min"; "" is none) of register requests, of polls per device
	// and of service API requests, over which requests answer 429
	// (internal/limits).
	ThrottleRegistrations, ThrottlePolls, ThrottleService string
	// Faults are fault injection rules in the flag syntax of
	// limits.ParseRule, applied by this node only.
	Faults []string
	// ShutdownTimeout bounds the graceful drain on SIGTERM.
	ShutdownTimeout time.Duration
	// LogFormat is text or json; LogLevel debug, info, warn or error.
	LogFormat string
	LogLevel  string
	// PprofAddr serves Go's profiling endpoints (/debug/pprof/) over plain
	// HTTP without authentication, for benchmarks (empty: none). They
	// expose the process's internals: keep it on a loopback address.
	PprofAddr string
	// RefusalJournalMaxEntries and RefusalJournalMaxAge bound the refusal
	// journal (internal/journal); the oldest entries go first.
	RefusalJournalMaxEntries int
	RefusalJournalMaxAge     time.Duration

	// Version is dpsd's version, sent as the User-Agent of outbound calls
	// (set by the binary, not a setting).
	Version string
}

// Defaults is the configuration of `dpsd serve` given no flag, environment
// variable or config file: the one place the defaults are declared. The
// flags of `dpsd serve` take their defaults from it, and Init fills unset
// settings from it.
func Defaults() Config {
	return Config{
		DataDir:           "./dpsd-data",
		StoreMaxConns:     sqlstore.DefaultMaxOpenConns,
		StoreTimeout:      sqlstore.DefaultQueryTimeout,
		StoreRetries:      sqlstore.DefaultRetries,
		StoreConnLifetime: sqlstore.DefaultConnMaxLifetime,
		HTTPSAddr:         ":8443",
		MQTTAddr:          ":8883",
		MaxConns:          4096,
		MaxConnsPerIP:     512,
		HandshakeTimeout:  10 * time.Second,
		MQTTIdleTimeout:   mqtt.DefaultIdleTimeout,
		RetryAfter:        3,
		AssignWait:        provisioning.DefaultAssignWait,
		AssignTimeout:     provisioning.DefaultAssignTimeout,
		MinRSABits:        attest.DefaultMinRSABits,
		MinECBits:         attest.DefaultMinECBits,
		MaxChainLength:    attest.DefaultMaxChainLength,
		ShutdownTimeout:   15 * time.Second,
		LogFormat:         "text",
		LogLevel:          "info",

		RefusalJournalMaxEntries: journal.DefaultMaxEntries,
		RefusalJournalMaxAge:     journal.DefaultMaxAge,
	}
}

// Files in the data directory.
const (
	DBFile    = "dpsd.db"
	CAFile    = "server-ca.pem"
	StateFile = "server.json"
)

// Init gives every setting left at its zero value its default from Defaults,
// except where the zero value has a meaning of its own: Store "" (SQLite in
// DataDir), MQTTAddr "" (no MQTT listener), StoreRetries 0 (no retries).
func (c *Config) Init() {
	d := Defaults()
	orDefault(&c.DataDir, d.DataDir)
	orDefault(&c.StoreMaxConns, d.StoreMaxConns)
	orDefault(&c.StoreTimeout, d.StoreTimeout)
	orDefault(&c.StoreConnLifetime, d.StoreConnLifetime)
	orDefault(&c.HTTPSAddr, d.HTTPSAddr)
	orDefault(&c.RetryAfter, d.RetryAfter)
	orDefault(&c.AssignWait, d.AssignWait)
	orDefault(&c.AssignTimeout, d.AssignTimeout)
	orDefault(&c.MaxConns, d.MaxConns)
	orDefault(&c.MaxConnsPerIP, d.MaxConnsPerIP)
	orDefault(&c.HandshakeTimeout, d.HandshakeTimeout)
	orDefault(&c.MQTTIdleTimeout, d.MQTTIdleTimeout)
	orDefault(&c.MinRSABits, d.MinRSABits)
	orDefault(&c.MinECBits, d.MinECBits)
	orDefault(&c.MaxChainLength, d.MaxChainLength)
	orDefault(&c.ShutdownTimeout, d.ShutdownTimeout)
	orDefault(&c.LogFormat, d.LogFormat)
	orDefault(&c.LogLevel, d.LogLevel)
	orDefault(&c.RefusalJournalMaxEntries, d.RefusalJournalMaxEntries)
	orDefault(&c.RefusalJournalMaxAge, d.RefusalJournalMaxAge)
}

func orDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// Validate checks values that would otherwise fail late.
func (c *Config) Validate() error {
	for _, a := range []struct{ name, v string }{{"https-addr", c.HTTPSAddr}, {"service-addr", c.ServiceAddr}, {"mqtt-addr", c.MQTTAddr}, {"metrics-addr", c.MetricsAddr}, {"pprof-addr", c.PprofAddr}} {
		if a.v == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a.v); err != nil {
			return fmt.Errorf("--%s %q is not host:port (e.g. :8443 or 127.0.0.1:8443)", a.name, a.v)
		}
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return fmt.Errorf("--tls-cert and --tls-key go together")
	}
	if c.CRLBaseURL != "" {
		u, err := url.Parse(c.CRLBaseURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return fmt.Errorf("--crl-base-url %q is not an absolute http(s) URL without query, e.g. https://dps.example.com:8443", c.CRLBaseURL)
		}
	}
	for _, h := range c.HostNames {
		if h == "" || strings.ContainsAny(h, " /:") && net.ParseIP(h) == nil {
			return fmt.Errorf("--hostname %q is not a host name or IP address", h)
		}
	}
	if c.StoreMaxConns < 0 || c.StoreMaxConns > 10000 {
		return fmt.Errorf("--store-max-conns %d is negative or more than 10000", c.StoreMaxConns)
	}
	if c.StoreTimeout < 0 || c.StoreTimeout > 10*time.Minute {
		return fmt.Errorf("--store-timeout %s is negative or longer than 10m", c.StoreTimeout)
	}
	if c.StoreRetries > 20 {
		return fmt.Errorf("--store-retries %d is more than 20", c.StoreRetries)
	}
	if c.StoreConnLifetime < 0 {
		return fmt.Errorf("--store-conn-lifetime %s is negative", c.StoreConnLifetime)
	}
	if c.RetryAfter < 1 || c.RetryAfter > 300 {
		return fmt.Errorf("--retry-after %d is outside 1 to 300 seconds", c.RetryAfter)
	}
	if c.RefusalJournalMaxEntries < 1 || c.RefusalJournalMaxEntries > 100_000_000 {
		return fmt.Errorf("--refusal-journal-max-entries %d is outside 1 to 100000000", c.RefusalJournalMaxEntries)
	}
	if c.RefusalJournalMaxAge < time.Minute {
		return fmt.Errorf("--refusal-journal-max-age %s is shorter than 1m", c.RefusalJournalMaxAge)
	}
	if c.AssignWait < 0 || c.AssignWait > 20*time.Second {
		return fmt.Errorf("--assign-wait %s is negative or longer than 20s (a device request must not wait longer)", c.AssignWait)
	}
	if c.AssignTimeout < time.Second || c.AssignTimeout > 10*time.Minute {
		return fmt.Errorf("--assign-timeout %s is outside 1s to 10m", c.AssignTimeout)
	}
	if c.MaxConns < 1 || c.MaxConns > 1<<20 {
		return fmt.Errorf("--max-conns %d is outside 1 to %d", c.MaxConns, 1<<20)
	}
	if c.MaxConnsPerIP < 1 || c.MaxConnsPerIP > c.MaxConns {
		return fmt.Errorf("--max-conns-per-ip %d is outside 1 to --max-conns (%d)", c.MaxConnsPerIP, c.MaxConns)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"handshake-timeout", c.HandshakeTimeout}, {"mqtt-idle-timeout", c.MQTTIdleTimeout}} {
		if d.v < 0 || d.v > 10*time.Minute {
			return fmt.Errorf("--%s %s is negative or longer than 10m", d.name, d.v)
		}
	}
	if c.MinRSABits < 1024 || c.MinRSABits > 16384 {
		return fmt.Errorf("--min-rsa-bits %d is outside 1024 to 16384", c.MinRSABits)
	}
	if c.MinECBits < 224 || c.MinECBits > 521 {
		return fmt.Errorf("--min-ec-bits %d is outside 224 (P-224) to 521 (P-521)", c.MinECBits)
	}
	if c.MaxChainLength < 1 || c.MaxChainLength > 100 {
		return fmt.Errorf("--max-chain-length %d is outside 1 to 100", c.MaxChainLength)
	}
	if c.MaxSASLifetime < 0 {
		return fmt.Errorf("--max-sas-lifetime %s is negative", c.MaxSASLifetime)
	}
	if _, err := c.Throttle(nil); err != nil {
		return err
	}
	if _, err := c.FaultRules(); err != nil {
		return err
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		return fmt.Errorf("--log-format %q is not text or json", c.LogFormat)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("--log-level %q is not debug, info, warn or error", c.LogLevel)
	}
	return nil
}

// Throttle is the throttle of the --throttle-* rates (m may be nil).
func (c *Config) Throttle(m *metrics.Metrics) (*limits.Throttle, error) {
	var rates [3]limits.Rate
	for i, r := range []struct{ name, v string }{
		{"throttle-registrations", c.ThrottleRegistrations}, {"throttle-polls", c.ThrottlePolls}, {"throttle-service", c.ThrottleService},
	} {
		var err error
		if rates[i], err = limits.ParseRate(r.v); err != nil {
			return nil, fmt.Errorf("--%s: %v", r.name, err)
		}
	}
	return limits.NewThrottle(rates[0], rates[1], rates[2], m), nil
}

// FaultRules are the --fault rules.
func (c *Config) FaultRules() ([]limits.Rule, error) {
	var rules []limits.Rule
	for _, f := range c.Faults {
		r, err := limits.ParseRule(f)
		if err != nil {
			return nil, fmt.Errorf("--fault: %v", err)
		}
		rules = append(rules, r)
	}
	return rules, nil
}

// StoreOptions are the store settings of c.
func (c *Config) StoreOptions(log *slog.Logger) sqlstore.Options {
	// sqlstore reads 0 as its default and a negative count as none.
	retries := c.StoreRetries
	if retries <= 0 {
		retries = -1
	}
	return sqlstore.Options{
		Logger:          log,
		MaxOpenConns:    c.StoreMaxConns,
		QueryTimeout:    c.StoreTimeout,
		Retries:         retries,
		ConnMaxLifetime: c.StoreConnLifetime,
		SkipMigrate:     c.SkipMigrate,
	}
}

// StoreDSN returns the database to open.
func (c *Config) StoreDSN() string {
	if c.Store != "" {
		return c.Store
	}
	return filepath.Join(c.DataDir, DBFile)
}

// AdvertisedHost is the host name clients are told to dial.
func (c *Config) AdvertisedHost() string {
	if len(c.HostNames) > 0 {
		return c.HostNames[0]
	}
	return "localhost"
}
