package cli

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/dpsd/dpsd/internal/server"
	"github.com/dpsd/dpsd/internal/store/sqlstore"
)

func newServeCmd(e *env) *cobra.Command {
	var sf serveFlags
	c := &cobra.Command{
		Use:   "serve",
		Short: "Run the provisioning service",
		Long: `Run the provisioning service: the device API (register, operation status) and the
service API (enrollments, groups, registrations, CA certificates, linked hubs,
policies) on one HTTPS listener, health on /healthz and Prometheus metrics on
/metrics (on the service API's listener, or on --metrics-addr). Devices also register over MQTT: MQTT over TLS on --mqtt-addr
(default ` + server.Defaults().MQTTAddr + `) and MQTT over WebSocket on the HTTPS listener at
/$iothub/websocket.

The first start initializes the instance in the database: an ID scope, a
server CA and a server certificate for localhost, 127.0.0.1, ::1 and every
--hostname, and the owner policy provisioningserviceowner. 'dpsd info' prints
how to reach it.

With --store postgres://..., several nodes serve one instance from one
database, behind a TCP load balancer: the first node creates the instance and
the others adopt it. Each node migrates the schema at start, under an
advisory lock; --skip-migrate leaves that to 'dpsd migrate'. See
docs/deploy.md.

Every flag can also be set as DPSD_<FLAG> in the environment (DPSD_HTTPS_ADDR,
DPSD_HOSTNAME=a,b) or in a JSON file given with --config ({"https-addr": ":8443"}).
Flags win over the environment, which wins over the file.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cfg, err := sf.resolve(c.Flags(), e.getenv)
			if err != nil {
				return err
			}
			cfg.Version = Version
			log := newLogger(e.stderr, cfg.LogFormat, cfg.LogLevel)
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			s, err := server.New(ctx, cfg, log)
			if errors.Is(err, sqlstore.ErrSchemaTooOld) {
				return withHint(err, "run 'dpsd migrate' with the same --store first, or start without --skip-migrate")
			}
			if err != nil {
				return withHint(err, "check --data (%s) and --store", cfg.DataDir)
			}
			return s.Serve(ctx)
		},
	}
	sf.add(c.Flags())
	return c
}

// serveFlags are the settings of `dpsd serve`: one flag each, which is also
// its environment variable and its key in the config file (config.go).
type serveFlags struct {
	cfg        server.Config
	configFile string
}

// add defines the flags, in the order docs/configuration.md lists them, with
// the defaults of server.Defaults.
func (sf *serveFlags) add(f *pflag.FlagSet) {
	cfg, def := &sf.cfg, server.Defaults()
	f.StringVar(&cfg.DataDir, "data", def.DataDir, "data directory: embedded database, server CA file, server.json")
	f.StringVar(&cfg.Store, "store", def.Store, "database DSN (default: SQLite in the data directory; postgres://... for PostgreSQL)")
	f.StringVar(&cfg.HTTPSAddr, "https-addr", def.HTTPSAddr, "address of the HTTPS listener (device API, and service API unless --service-addr)")
	f.StringVar(&cfg.ServiceAddr, "service-addr", def.ServiceAddr, "serve the service API on its own listener at this address")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", def.MetricsAddr, "serve /metrics (and /healthz) over plain HTTP at this address, and on no other listener; without it, metrics are served on the listener of the service API")
	f.StringVar(&cfg.MQTTAddr, "mqtt-addr", def.MQTTAddr, "address of the MQTT-over-TLS listener (device API over MQTT 3.1.1; \"\" turns it off); MQTT over WebSocket is served on the HTTPS listener at /$iothub/websocket")
	f.IntVar(&cfg.MaxConns, "max-conns", def.MaxConns, "most connections each listener holds open; more are closed at once (keep the sum over the listeners well below the file limit, ulimit -n)")
	f.IntVar(&cfg.MaxConnsPerIP, "max-conns-per-ip", def.MaxConnsPerIP, "most connections each listener holds open from one source address (an IPv6 /64)")
	f.DurationVar(&cfg.HandshakeTimeout, "handshake-timeout", def.HandshakeTimeout, "longest a new connection may take to complete its TLS handshake and send its first request (HTTPS) or CONNECT (MQTT)")
	f.DurationVar(&cfg.MQTTIdleTimeout, "mqtt-idle-timeout", def.MQTTIdleTimeout, "close an MQTT connection that sends no register or operation-status request for this long (the retry-after of the last answer is added), whatever its keep-alive")
	f.StringSliceVar(&cfg.HostNames, "hostname", def.HostNames, "host name or IP clients dial, added to the server certificate (repeatable; the first is advertised)")
	f.StringVar(&cfg.TLSCertFile, "tls-cert", def.TLSCertFile, "server certificate chain (PEM) to use instead of the generated one")
	f.StringVar(&cfg.TLSKeyFile, "tls-key", def.TLSKeyFile, "private key (PEM) of --tls-cert")
	f.StringVar(&cfg.CRLBaseURL, "crl-base-url", def.CRLBaseURL, "URL the service listener is reached at from outside (https://dps.example.com:8443): the certificates dpsd issues name their CA's CRL there, at /crl/{issuing CA}.crl")
	f.BoolVar(&cfg.AzureStrict, "azure-strict", def.AzureStrict, "answer every register with status assigning first, as Azure does, so devices exercise their polling path")
	f.IntVar(&cfg.RetryAfter, "retry-after", def.RetryAfter, "Retry-After seconds sent with an assigning status")
	f.DurationVar(&cfg.AssignWait, "assign-wait", def.AssignWait, "how long a register request waits for an assignment that calls out (a hub's device registry, custom allocation) before it answers assigning and the device polls")
	f.DurationVar(&cfg.AssignTimeout, "assign-timeout", def.AssignTimeout, "longest an assignment that calls out may take, hub retries included, before it fails; one whose node stopped is taken over after twice this")
	f.StringVar(&cfg.OutboundCAFile, "outbound-ca-file", def.OutboundCAFile, "PEM certificates trusted, besides the system roots, by every outbound call (hubs, registry and custom allocation webhooks)")
	f.StringVar(&cfg.Location, "location", def.Location, "this node's location, as linked hubs name theirs (westeurope), for geoLatency allocation")
	f.IntVar(&cfg.MinRSABits, "min-rsa-bits", def.MinRSABits, "weakest RSA key, in bits, a device certificate or a CA certificate of its chain may have")
	f.IntVar(&cfg.MinECBits, "min-ec-bits", def.MinECBits, "weakest elliptic curve key, in bits (256: P-256), a device certificate or a CA certificate of its chain may have")
	f.IntVar(&cfg.MaxChainLength, "max-chain-length", def.MaxChainLength, "most certificates a device may present in the TLS handshake, its own included")
	f.DurationVar(&cfg.MaxSASLifetime, "max-sas-lifetime", def.MaxSASLifetime, "refuse SAS tokens, of devices and of the service API, that stay valid longer than this from now (0: no limit)")
	f.BoolVar(&cfg.ProtectEnrollmentKeys, "protect-enrollment-keys", def.ProtectEnrollmentKeys, "make the symmetric keys of enrollments and groups (their attestation mechanism) readable only with EnrollmentWrite; Azure lets EnrollmentRead read them")
	f.StringVar(&cfg.ThrottleRegistrations, "throttle-registrations", def.ThrottleRegistrations, "answer 429 (Retry-After, errorCode 429001) to register requests over this rate, e.g. 1000/min as Azure; each node counts its own (off by default)")
	f.StringVar(&cfg.ThrottlePolls, "throttle-polls", def.ThrottlePolls, "answer 429 to a device's operation-status polls over this rate, e.g. 5/10s as Azure (off by default)")
	f.StringVar(&cfg.ThrottleService, "throttle-service", def.ThrottleService, "answer 429 to service API requests over this rate, e.g. 1000/min as Azure; each node counts its own (off by default)")
	f.StringArrayVar(&cfg.Faults, "fault", def.Faults, "inject a fault for firmware tests (repeatable; never in production): ACTION[,KEY=VALUE]... with ACTION 429, 500, 503, delay=DURATION or drop, and keys fraction, on (register, poll), transport, registration-ids (a pattern), enrollment, enrollment-group, retry-after, count; see docs/guide.md")
	f.IntVar(&cfg.StoreMaxConns, "store-max-conns", def.StoreMaxConns, "PostgreSQL: most connections this node opens to the database")
	f.DurationVar(&cfg.StoreTimeout, "store-timeout", def.StoreTimeout, "longest one database call may take, waiting for a connection and retries included; then the request answers 503")
	f.IntVar(&cfg.StoreRetries, "store-retries", def.StoreRetries, "PostgreSQL: retries of a transient failure (serialization failure, deadlock, lost connection) before a request answers 503; 0 turns them off")
	f.DurationVar(&cfg.StoreConnLifetime, "store-conn-lifetime", def.StoreConnLifetime, "PostgreSQL: replace each connection after this long, to follow a fail-over")
	f.BoolVar(&cfg.SkipMigrate, "skip-migrate", def.SkipMigrate, "do not migrate the database schema at start: refuse one older than this dpsd (run 'dpsd migrate' first)")
	f.StringVar(&cfg.LogFormat, "log-format", def.LogFormat, "log format: text or json")
	f.StringVar(&cfg.LogLevel, "log-level", def.LogLevel, "log level: debug, info, warn or error")
	f.StringVar(&cfg.PprofAddr, "pprof-addr", def.PprofAddr, "serve Go's profiling endpoints (/debug/pprof/) over plain HTTP without authentication at this address, for benchmarks; keep it on loopback (127.0.0.1:6060)")
	f.IntVar(&cfg.RefusalJournalMaxEntries, "refusal-journal-max-entries", def.RefusalJournalMaxEntries, "most entries the refusal journal keeps; the oldest go first")
	f.DurationVar(&cfg.RefusalJournalMaxAge, "refusal-journal-max-age", def.RefusalJournalMaxAge, "how long the refusal journal keeps an entry")
	f.StringVar(&sf.configFile, configFlag, "", "JSON config file keyed by flag name")
}

// resolve completes the parsed flags from the environment and the config
// file, and checks the result.
func (sf *serveFlags) resolve(f *pflag.FlagSet, getenv func(string) string) (server.Config, error) {
	if err := applyEnvAndFile(f, getenv, sf.configFile); err != nil {
		return server.Config{}, err
	}
	cfg := sf.cfg
	cfg.Init()
	if err := cfg.Validate(); err != nil {
		return server.Config{}, withHint(err, "see 'dpsd serve --help'")
	}
	return cfg, nil
}

func newLogger(w io.Writer, format, level string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
