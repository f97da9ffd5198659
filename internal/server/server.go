package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dpsd/dpsd/internal/allocation"
	"github.com/dpsd/dpsd/internal/attest"
	"github.com/dpsd/dpsd/internal/connlimit"
	"github.com/dpsd/dpsd/internal/console"
	"github.com/dpsd/dpsd/internal/deviceapi"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/httpx"
	"github.com/dpsd/dpsd/internal/instance"
	"github.com/dpsd/dpsd/internal/issuance"
	"github.com/dpsd/dpsd/internal/journal"
	"github.com/dpsd/dpsd/internal/limits"
	"github.com/dpsd/dpsd/internal/metrics"
	"github.com/dpsd/dpsd/internal/mqtt"
	"github.com/dpsd/dpsd/internal/outbound"
	"github.com/dpsd/dpsd/internal/provisioning"
	"github.com/dpsd/dpsd/internal/serviceapi"
	"github.com/dpsd/dpsd/internal/store"
	"github.com/dpsd/dpsd/internal/store/cache"
	"github.com/dpsd/dpsd/internal/store/sqlstore"
	"github.com/dpsd/dpsd/internal/wait"
)

// Server is a running dpsd instance.
type Server struct {
	cfg      Config
	log      *slog.Logger
	store    store.Store
	inst     *store.Instance
	metrics  *metrics.Metrics
	tls      *tls.Config
	leaf     *x509.Certificate // the server certificate
	service  http.Handler
	console  http.Handler
	device   http.Handler
	crls     http.Handler
	pipeline *provisioning.Pipeline
	journal  *journal.Journal
	mqtt     *mqtt.Server
	prober   *allocation.Prober
	// probing starts the prober the first time geoLatency allocation asks
	// for a round-trip time, so that a node that never uses it dials no hub.
	probing sync.Once
	ctx     context.Context // Serve's
	faults  *limits.Faults

	mu        sync.Mutex
	listeners []net.Listener
	byName    map[string]net.Listener // "https", "service", "metrics", "mqtt"
	pprofAddr string
	servers   []*http.Server
	state     State
}

// New opens the store, initializes or loads the instance, and prepares TLS
// and the handlers. Call Serve to start listening.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Server, error) {
	cfg.Init()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	m := metrics.New()
	opts := cfg.StoreOptions(log)
	opts.ObserveBatch = func(n int) { m.CommitBatch.Observe(float64(n)) }
	st, err := sqlstore.Open(ctx, cfg.StoreDSN(), opts)
	if err != nil {
		return nil, fmt.Errorf("opening the store: %w", err)
	}
	s := &Server{cfg: cfg, log: log, store: st, metrics: m}
	if err := s.initInstance(ctx); err != nil {
		st.Close()
		return nil, err
	}
	out, err := outbound.New(outbound.Options{CAFile: cfg.OutboundCAFile, Version: cfg.Version})
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("--outbound-ca-file: %w", err)
	}
	// Validate parsed them already.
	throttle, _ := cfg.Throttle(s.metrics)
	rules, _ := cfg.FaultRules()
	s.faults = limits.NewFaults(rules, st, log, s.metrics)
	api := serviceapi.New(serviceapi.Config{
		Store: st, Log: log, MaxSASLifetime: cfg.MaxSASLifetime, OwnHost: s.ownHost, ProtectEnrollmentKeys: cfg.ProtectEnrollmentKeys,
		CRLBaseURL: cfg.CRLBaseURL,
		Faults:     s.faults,
		Endpoints: func() (string, string) {
			s.mu.Lock()
			defer s.mu.Unlock()
			return s.state.DeviceEndpoint, s.state.ServiceEndpoint
		},
	})
	s.service = s.metrics.Middleware("service", httpx.Wrap(log, throttle.ServiceAPI(log, api)))
	s.console = console.New(console.Config{
		API: s.service, Authenticate: api.Authenticate, Log: log,
		Instance: func() console.Instance {
			st := s.State()
			return console.Instance{IDScope: s.inst.IDScope, DeviceEndpoint: st.DeviceEndpoint, ServiceEndpoint: st.ServiceEndpoint, MQTTEndpoint: st.MQTTEndpoint}
		},
		Counters: func() (float64, float64) {
			return metrics.Sum(s.metrics.Registrations), metrics.Sum(s.metrics.Refusals)
		},
	})
	s.journal = journal.New(st, journal.Options{
		MaxEntries: cfg.RefusalJournalMaxEntries, MaxAge: cfg.RefusalJournalMaxAge,
		Registry: s.metrics.Registry, Log: log,
	})
	s.prober = &allocation.Prober{Targets: s.probeTargets}
	// Registrations read what rarely changes from memory, synced with the
	// database's configuration version when each request arrives.
	cached := cache.New(st)
	s.pipeline = &provisioning.Pipeline{
		Journal: s.journal,
		Store:   cached,
		Sync:    cached.Sync,
		Attest: &attest.Attestor{Store: cached, Log: log, MinRSABits: cfg.MinRSABits, MinECBits: cfg.MinECBits,
			MaxChainLength: cfg.MaxChainLength, MaxSASLifetime: cfg.MaxSASLifetime},
		Log:           log,
		Metrics:       s.metrics,
		IDScope:       s.inst.IDScope,
		Strict:        cfg.AzureStrict,
		RetryAfter:    cfg.RetryAfter,
		Outbound:      out,
		Geo:           allocation.Geo{Location: cfg.Location, RTT: s.rtt},
		AssignWait:    cfg.AssignWait,
		AssignTimeout: cfg.AssignTimeout,
		Admitted:      s.faults.Admitted,
		Issuer:        &issuance.Issuer{CRLBaseURL: cfg.CRLBaseURL},
	}
	s.crls = s.metrics.Middleware("crl", httpx.Wrap(log, &issuance.CRLs{Store: st, Log: log}))
	// Both device transports enter the pipeline through one gate.
	gate := &limits.Gate{Next: s.pipeline, Throttle: throttle, Faults: s.faults}
	s.device = s.metrics.Middleware("device", httpx.Wrap(log, &deviceapi.API{Pipeline: gate, Log: log,
		Endpoint: func() string { return s.State().DeviceEndpoint }}))
	s.mqtt = &mqtt.Server{Provisioner: gate, Log: log, Metrics: mqtt.NewMetrics(s.metrics.Registry), TLSConfig: s.tls,
		ConnectTimeout: cfg.HandshakeTimeout, IdleTimeout: cfg.MQTTIdleTimeout}
	return s, nil
}

func (s *Server) initInstance(ctx context.Context) error {
	inst, created, err := instance.Ensure(ctx, s.store, s.cfg.HostNames)
	if err != nil {
		return fmt.Errorf("initializing the instance: %w", err)
	}
	s.inst = inst
	if created {
		s.log.Info("initialized a new instance", "idScope", inst.IDScope)
	}
	var cert tls.Certificate
	if s.cfg.TLSCertFile != "" {
		cert, err = tls.LoadX509KeyPair(s.cfg.TLSCertFile, s.cfg.TLSKeyFile)
		if err != nil {
			return fmt.Errorf("loading --tls-cert/--tls-key: %w", err)
		}
	} else {
		cert, err = instance.TLSCertificate(inst)
		if err != nil {
			return err
		}
		if err := writeFileAtomic(filepath.Join(s.cfg.DataDir, CAFile), inst.ServerCACertPEM, 0o644); err != nil {
			return fmt.Errorf("writing the server CA file: %w", err)
		}
	}
	if s.leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
		return fmt.Errorf("the server certificate: %w", err)
	}
	s.tls = &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		// Devices present certificates that no fixed pool can verify
		// (self-signed individual enrollments, CAs that change at run time),
		// and symmetric-key devices and the service API present none on the
		// same port: request a certificate, verify it in the application.
		ClientAuth: tls.RequestClientCert,
		NextProtos: []string{"http/1.1"},
	}
	return nil
}

// ownHost reports whether host (lower case, without port) is one of the
// instance's own names: a --hostname, or a name or address its server
// certificate is valid for. Service tokens must name one.
func (s *Server) ownHost(host string) bool {
	for _, h := range s.cfg.HostNames {
		if strings.EqualFold(h, host) {
			return true
		}
	}
	return s.leaf.VerifyHostname(host) == nil
}

// Store returns the server's store (for in-process tests).
func (s *Server) Store() store.Store { return s.store }

// FlushJournal writes the refusals recorded so far to the store (tests).
func (s *Server) FlushJournal(ctx context.Context) error { return s.journal.Flush(ctx) }

// Instance returns the instance the server serves.
func (s *Server) Instance() *store.Instance { return s.inst }

// Serve listens on the configured addresses and serves until ctx ends, then
// drains connections for up to ShutdownTimeout.
func (s *Server) Serve(ctx context.Context) error {
	defer s.store.Close()
	// Before the store closes: the journal writes what is queued.
	defer s.journal.Close()
	s.mu.Lock()
	s.ctx = ctx
	s.mu.Unlock()
	type lis struct {
		addr    string
		handler http.Handler
		what    string
		tls     bool
	}
	ls := []lis{{s.cfg.HTTPSAddr, s.handler(s.cfg.ServiceAddr == "", true), "https", true}}
	if s.cfg.ServiceAddr != "" {
		ls = append(ls, lis{s.cfg.ServiceAddr, s.handler(true, false), "service", true})
	}
	if s.cfg.MetricsAddr != "" {
		ls = append(ls, lis{s.cfg.MetricsAddr, s.metricsOnly(), "metrics", false})
	}
	errc := make(chan error, len(ls)+1)
	for _, l := range ls {
		ln, err := s.listen(l.what, l.addr)
		if err != nil {
			s.shutdown()
			return err
		}
		srv := &http.Server{
			Handler:           l.handler,
			TLSConfig:         s.tls,
			ReadHeaderTimeout: s.cfg.HandshakeTimeout,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       2 * time.Minute,
			MaxHeaderBytes:    32 << 10,
			ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		}
		s.mu.Lock()
		s.servers = append(s.servers, srv)
		s.mu.Unlock()
		serve := func() error { return srv.Serve(ln) }
		if l.tls {
			serve = func() error { return srv.Serve(tls.NewListener(ln, s.tls)) }
		}
		go func() { errc <- serve() }()
	}
	if s.cfg.MQTTAddr != "" {
		ln, err := s.listen("mqtt", s.cfg.MQTTAddr)
		if err != nil {
			s.shutdown()
			return err
		}
		go func() {
			if err := s.mqtt.Serve(ln); !errors.Is(err, mqtt.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	if s.cfg.PprofAddr != "" {
		srv, err := s.servePprof(s.cfg.PprofAddr)
		if err != nil {
			s.shutdown()
			return err
		}
		s.mu.Lock()
		s.servers = append(s.servers, srv)
		s.mu.Unlock()
	}
	s.checkFileLimit()
	s.startFaults(ctx)
	go s.purgeOperations(ctx)
	go s.pipeline.Sweep(ctx)
	if err := s.writeState(); err != nil {
		s.log.Warn("could not write server.json", "err", err)
	}
	s.log.Info("dpsd ready", "idScope", s.inst.IDScope, "deviceEndpoint", s.state.DeviceEndpoint, "serviceEndpoint", s.state.ServiceEndpoint)
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			s.shutdown()
			return err
		}
	}
	s.log.Info("shutting down", "timeout", s.cfg.ShutdownTimeout.String())
	return s.shutdown()
}

func (s *Server) shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	var errs []error
	for _, srv := range s.servers {
		errs = append(errs, srv.Shutdown(ctx))
	}
	// After the HTTPS servers: MQTT over WebSocket connections are hijacked
	// from them, and the MQTT server tracks those too.
	errs = append(errs, s.mqtt.Shutdown(ctx))
	// Assignments still running get what is left of the drain; any that
	// do not end in time are taken over later (their lease runs out).
	s.pipeline.Drain(ctx)
	// A listener opened before a later one failed may not be served yet.
	s.mu.Lock()
	for _, ln := range s.listeners {
		ln.Close()
	}
	s.mu.Unlock()
	return errors.Join(errs...)
}

// listen opens the listener named what ("https", "service", "metrics",
// "mqtt") on addr, within the connection caps.
func (s *Server) listen(what, addr string) (net.Listener, error) {
	raw, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s (--%s-addr): %w", addr, what, err)
	}
	ln := connlimit.Wrap(raw, what, connlimit.Limits{Max: s.cfg.MaxConns, PerSource: s.cfg.MaxConnsPerIP}, connlimit.Hooks{
		Refused: func(reason string) { s.metrics.ConnectionsRefused.WithLabelValues(what, reason).Inc() },
		Open:    func(d int) { s.metrics.ConnectionsOpen.WithLabelValues(what).Add(float64(d)) },
	}, s.log)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listeners = append(s.listeners, ln)
	if s.byName == nil {
		s.byName = map[string]net.Listener{}
	}
	s.byName[what] = ln
	s.log.Info("listening", "listener", what, "addr", ln.Addr().String())
	return ln, nil
}

// faultReload is how often a node reads the fault injection rules set
// through the service API, possibly through another node.
const faultReload = 2 * time.Second

// startFaults says loudly that fault injection is on, if it is, and keeps
// the rules set through the service API up to date.
func (s *Server) startFaults(ctx context.Context) {
	if len(s.cfg.Faults) > 0 {
		s.log.Warn("FAULT INJECTION IS ON (--fault): devices get failures on purpose; never run this in production",
			"rules", strings.Join(s.cfg.Faults, "; "))
	}
	if err := s.faults.Load(ctx); err != nil {
		s.log.Warn("reading the fault injection rules", "err", err)
	}
	go s.faults.Watch(ctx, faultReload)
}

// checkFileLimit warns when the connection caps of the listeners add up
// to more than the process may open: the caps would not be what stops a
// flood of connections, running out of file descriptors would.
func (s *Server) checkFileLimit() {
	limit, ok := fileLimit()
	s.mu.Lock()
	n := len(s.listeners)
	s.mu.Unlock()
	// Room for the database, the data files and outbound connections.
	const spare = 256
	if need := uint64(n*s.cfg.MaxConns + spare); ok && need > limit {
		s.log.Warn("the connection caps exceed the file limit: raise the limit (ulimit -n, LimitNOFILE=) or lower --max-conns",
			"listeners", n, "maxConns", s.cfg.MaxConns, "fileLimit", limit)
	}
}

// metricsOnly serves --metrics-addr: metrics and health, over plain HTTP.
func (s *Server) metricsOnly() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metrics.Handler())
	mux.HandleFunc("GET /healthz", s.healthz)
	return mux
}

// handler dispatches on the first path segment: the device and service APIs
// cannot share one ServeMux (POST /{idScope}/registrations/{id} conflicts
// with POST /registrations/{id}/query).
func (s *Server) handler(service, device bool) http.Handler {
	metricsHandler := s.metrics.Handler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		first, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		switch {
		case first == "healthz":
			s.healthz(w, r)
		case first == "metrics" && service && s.cfg.MetricsAddr == "":
			metricsHandler.ServeHTTP(w, r)
		case first == "metrics":
			// Never on a listener that serves devices only: what the
			// metrics say about the fleet is the operator's.
			httpx.Wrap(s.log, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				httpx.WriteError(w, r, s.log, dpserr.NotFound(dpserr.CodeNotFound, "metrics are not served on this listener"))
			})).ServeHTTP(w, r)
		case first == "$iothub" && device:
			s.mqtt.ServeHTTP(w, r)
		case first == "console" && service:
			s.console.ServeHTTP(w, r)
		case first == "crl" && service:
			// The issuing CAs' revocation lists: public, as CRLs are.
			s.crls.ServeHTTP(w, r)
		case serviceapi.Owns(first):
			if !service {
				httpx.Wrap(s.log, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					httpx.WriteError(w, r, s.log, dpserr.NotFound(dpserr.CodeNotFound, "the service API is served on %s, not on this listener", s.state.ServiceEndpoint))
				})).ServeHTTP(w, r)
				return
			}
			s.service.ServeHTTP(w, r)
		case device:
			s.device.ServeHTTP(w, r)
		default:
			httpx.Wrap(s.log, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				httpx.WriteError(w, r, s.log, dpserr.NotFound(dpserr.CodeNotFound, "this listener serves the service API only"))
			})).ServeHTTP(w, r)
		}
	})
}

// rtt is geoLatency's round-trip time to a hub, from the prober, which it
// starts on first use.
func (s *Server) rtt(hub string) (time.Duration, bool) {
	s.probing.Do(func() {
		s.mu.Lock()
		ctx := s.ctx
		s.mu.Unlock()
		if ctx != nil {
			go s.prober.Run(ctx)
		}
	})
	return s.prober.RTT(hub)
}

// probeTargets are the linked hubs, at the address of their host name.
func (s *Server) probeTargets() []allocation.ProbeTarget {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hubs, err := s.store.LinkedHubs(ctx)
	if err != nil {
		return nil
	}
	out := make([]allocation.ProbeTarget, len(hubs))
	for i, h := range hubs {
		out[i] = allocation.ProbeTarget{Hub: h.Name, Addr: allocation.ProbeAddr(h.Name)}
	}
	return out
}

// purgeOperations deletes expired operations every few minutes; devices poll
// an operation for seconds, and the registration record keeps the outcome.
func (s *Server) purgeOperations(ctx context.Context) {
	wait.Every(ctx, 5*time.Minute, func() {
		n, err := s.store.DeleteOperationsBefore(ctx, time.Now())
		if err != nil {
			s.log.Warn("purging expired operations", "err", err)
		} else if n > 0 {
			s.log.Debug("purged expired operations", "count", n)
		}
	})
}

// health is the answer of /healthz.
type health struct {
	Status string `json:"status"`
	Store  string `json:"store,omitempty"`
	// FaultInjection lists the fault injection rules in force.
	FaultInjection []string `json:"faultInjection,omitempty"`
}

// healthz answers 200 when the store answers, 503 otherwise. It logs
// nothing: a load balancer checks often, and the store logs an outage once.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	// Fault injection is on for everyone to see.
	faults := s.faults.Describe()
	if err := s.store.Ping(ctx); err != nil {
		httpx.WriteJSON(w, http.StatusServiceUnavailable, health{Status: "unavailable", Store: "unreachable", FaultInjection: faults})
		return
	}
	httpx.WriteJSON(w, http.StatusOK, health{Status: "ok", FaultInjection: faults})
}

func (s *Server) writeState() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	host := s.cfg.AdvertisedHost()
	endpoint := func(ln net.Listener) string {
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		return net.JoinHostPort(host, port)
	}
	service := s.byName["service"]
	if service == nil {
		service = s.byName["https"]
	}
	s.state = State{
		IDScope:         s.inst.IDScope,
		DeviceEndpoint:  endpoint(s.byName["https"]),
		ServiceEndpoint: endpoint(service),
		PID:             os.Getpid(),
		StartedAt:       time.Now().UTC(),
	}
	if ln := s.byName["mqtt"]; ln != nil {
		s.state.MQTTEndpoint = endpoint(ln)
	}
	if ln := s.byName["metrics"]; ln != nil {
		s.state.MetricsEndpoint = ln.Addr().String()
	}
	if s.cfg.TLSCertFile == "" {
		abs, err := filepath.Abs(filepath.Join(s.cfg.DataDir, CAFile))
		if err == nil {
			s.state.ServerCAFile = abs
		}
	}
	return WriteState(s.cfg.DataDir, &s.state)
}

// State returns the endpoints the server listens on (after Serve started).
func (s *Server) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp" + strconv.Itoa(os.Getpid())
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
