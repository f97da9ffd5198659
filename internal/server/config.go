// Package server wires a dpsd instance together: the store, the instance
// identity, TLS, the device and service APIs behind one or two HTTPS
// listeners, health, metrics and graceful shutdown.
package server

import (
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/dpsd/dpsd/internal/store/sqlstore"
)

// Config is everything `dpsd serve` can be told. Flags, DPSD_* environment
// variables and an optional JSON config file fill it (see internal/cli).
type Config struct {
	// DataDir holds the embedded database, the server CA file a client must
	// trust (server-ca.pem) and server.json with the endpoints. Created 0700.
	DataDir string `json:"data"`
	// Store is the database: empty for SQLite in DataDir, or a DSN
	// (postgres://...).
	Store string `json:"store"`
	// StoreMaxConns bounds this node's PostgreSQL connections (0: 20).
	StoreMaxConns int `json:"storeMaxConns"`
	// StoreTimeout bounds each database call, waiting for a connection and
	// retries included; a call that runs out of time answers 503 (0: 10 s).
	StoreTimeout time.Duration `json:"storeTimeout"`
	// StoreRetries is how many times a transient PostgreSQL failure is
	// retried (0: 3; negative: none).
	StoreRetries int `json:"storeRetries"`
	// StoreConnLifetime recycles PostgreSQL connections, so that a
	// fail-over or a DNS change is picked up (0: 30 min).
	StoreConnLifetime time.Duration `json:"storeConnLifetime"`
	// SkipMigrate refuses a database schema older than this binary instead
	// of migrating it at start, for deployments that run `dpsd migrate`
	// as an explicit upgrade step.
	SkipMigrate bool `json:"skipMigrate"`
	// HTTPSAddr serves the device API, and the service API unless ServiceAddr
	// is set.
	HTTPSAddr string `json:"httpsAddr"`
	// ServiceAddr moves the service API to its own listener.
	ServiceAddr string `json:"serviceAddr"`
	// MQTTAddr serves the device API over MQTT 3.1.1 with TLS (empty: no
	// MQTT listener; `dpsd serve` defaults to :8883). MQTT over WebSocket
	// is always served on the HTTPS listener at /$iothub/websocket.
	MQTTAddr string `json:"mqttAddr"`
	// HostNames are added to the server certificate; the first is the host
	// name advertised in endpoints and connection strings (default localhost).
	HostNames []string `json:"hostnames"`
	// TLSCertFile and TLSKeyFile replace the generated server certificate.
	TLSCertFile string `json:"tlsCert"`
	TLSKeyFile  string `json:"tlsKey"`
	// AzureStrict answers every register with "assigning" first, as Azure
	// does, for firmware that must exercise its polling path.
	AzureStrict bool `json:"azureStrict"`
	// RetryAfter is the Retry-After (seconds) of an "assigning" answer.
	RetryAfter int `json:"retryAfter"`
	// ShutdownTimeout bounds the graceful drain on SIGTERM.
	ShutdownTimeout time.Duration `json:"shutdownTimeout"`
	// LogFormat is text or json; LogLevel debug, info, warn or error.
	LogFormat string `json:"logFormat"`
	LogLevel  string `json:"logLevel"`
}

// Defaults.
const (
	DefaultDataDir   = "./dpsd-data"
	DefaultHTTPSAddr = ":8443"
	DefaultMQTTAddr  = ":8883"
	DBFile           = "dpsd.db"
	CAFile           = "server-ca.pem"
	StateFile        = "server.json"
)

// Init fills defaults.
func (c *Config) Init() {
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if c.HTTPSAddr == "" {
		c.HTTPSAddr = DefaultHTTPSAddr
	}
	if c.RetryAfter == 0 {
		c.RetryAfter = 3
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 15 * time.Second
	}
	if c.LogFormat == "" {
		c.LogFormat = "text"
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
}

// Validate checks values that would otherwise fail late.
func (c *Config) Validate() error {
	for _, a := range []struct{ name, v string }{{"https-addr", c.HTTPSAddr}, {"service-addr", c.ServiceAddr}, {"mqtt-addr", c.MQTTAddr}} {
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

// StoreOptions are the store settings of c.
func (c *Config) StoreOptions(log *slog.Logger) sqlstore.Options {
	return sqlstore.Options{
		Logger:          log,
		MaxOpenConns:    c.StoreMaxConns,
		QueryTimeout:    c.StoreTimeout,
		Retries:         c.StoreRetries,
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
