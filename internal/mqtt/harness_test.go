package mqtt_test

// The harness runs the MQTT transport as dpsd serves it: mqtt.Server on a
// real TCP listener with the instance's TLS certificate (client certificates
// requested, not verified), and MQTT over WebSocket plus the HTTPS device
// API on one httptest TLS server, in front of either the real provisioning
// pipeline on a SQLite store in t.TempDir(), or a fake one that a test
// scripts.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/attest"
	"github.com/dpsd/dpsd/internal/deviceapi"
	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/httpx"
	"github.com/dpsd/dpsd/internal/instance"
	"github.com/dpsd/dpsd/internal/journal"
	"github.com/dpsd/dpsd/internal/metrics"
	"github.com/dpsd/dpsd/internal/mqtt"
	"github.com/dpsd/dpsd/internal/mqtt/mqtttest"
	"github.com/dpsd/dpsd/internal/provisioning"
	"github.com/dpsd/dpsd/internal/provisioning/provtest"
	"github.com/dpsd/dpsd/internal/testutil"
)

const (
	hub1 = provtest.Hub1
	// short is how long a test waits to be sure nothing arrives.
	short = 300 * time.Millisecond
)

// harness is the instance (its store, its ID scope, and the fixtures its
// methods enroll) behind the MQTT transport.
type harness struct {
	provtest.Instance
	Pipeline *provisioning.Pipeline // nil with a fake provisioner
	Journal  *journal.Journal       // nil with a fake provisioner
	Fake     *fake
	Server   *mqtt.Server
	Metrics  *mqtt.Metrics
	PMetrics *metrics.Metrics
	Addr     string // MQTT over TLS, 127.0.0.1:port
	WSURL    string // wss://127.0.0.1:port/$iothub/websocket
	HTTPS    string // https://127.0.0.1:port, the device API
	roots    *x509.CertPool
	logs     *testutil.LogBuffer
	db       *sql.DB // read-only, for snapshots
}

type options struct {
	strict bool
	// fake replaces the pipeline.
	fake           bool
	connectTimeout time.Duration
	idleTimeout    time.Duration
	maxPacket      int
}

func newHarness(t testing.TB, o options) *harness {
	t.Helper()
	st, inst, dbPath := provtest.OpenStore(t)
	cert, err := instance.TLSCertificate(inst)
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	log, logs := testutil.NewLogger(t, slog.LevelDebug)
	pm := metrics.New()
	h := &harness{Instance: provtest.Instance{T: t, Store: st, Scope: inst.IDScope}, roots: x509.NewCertPool(), logs: logs, PMetrics: pm}
	h.roots.AppendCertsFromPEM(inst.ServerCACertPEM)
	var prov mqtt.Provisioner
	if o.fake {
		h.Fake = &fake{}
		prov = h.Fake
	} else {
		h.Journal = journal.New(st, journal.Options{Log: log})
		h.Pipeline = &provisioning.Pipeline{
			Store: st, Attest: &attest.Attestor{Store: st, Log: log}, Log: log, Metrics: pm,
			IDScope: inst.IDScope, Strict: o.strict, RetryAfter: 3, Journal: h.Journal,
		}
		prov = h.Pipeline
	}
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequestClientCert, NextProtos: []string{"http/1.1"}}
	h.Metrics = mqtt.NewMetrics(pm.Registry)
	h.Server = &mqtt.Server{Provisioner: prov, Log: log, Metrics: h.Metrics, TLSConfig: tlsConfig,
		ConnectTimeout: o.connectTimeout, IdleTimeout: o.idleTimeout, MaxPacketBytes: o.maxPacket}

	ln := listen(t)
	h.Addr = ln.Addr().String()
	served := make(chan error, 1)
	go func() { served <- h.Server.Serve(ln) }()

	var device http.Handler = http.NotFoundHandler()
	if h.Pipeline != nil {
		device = httpx.Wrap(log, &deviceapi.API{Pipeline: h.Pipeline, Log: log})
	}
	web := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/$iothub") {
			h.Server.ServeHTTP(w, r)
			return
		}
		device.ServeHTTP(w, r)
	}))
	web.TLS = tlsConfig.Clone()
	web.StartTLS()
	h.HTTPS = "https://" + web.Listener.Addr().String()
	h.WSURL = "wss://" + web.Listener.Addr().String() + mqtt.WebSocketPath

	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.Server.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v (connections did not end)", err)
		}
		select {
		case err := <-served:
			if err != mqtt.ErrServerClosed {
				t.Errorf("Serve returned %v, want ErrServerClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Serve did not return after Shutdown")
		}
		web.Close()
		if h.Journal != nil {
			h.Journal.Close()
		}
		st.Close()
	})
	h.db = provtest.OpenSnapshots(t, dbPath)
	return h
}

// tlsConfig is a device's TLS configuration: the server CA, SNI localhost,
// and its certificate (nil for symmetric keys).
func (h *harness) tlsConfig(cert *tls.Certificate) *tls.Config {
	c := &tls.Config{RootCAs: h.roots, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	if cert != nil {
		c.Certificates = []tls.Certificate{*cert}
	}
	return c
}

// dial connects a device over MQTT/TLS (not yet CONNECTed).
func (h *harness) dial(t testing.TB, cert *tls.Certificate) *mqtttest.Conn {
	t.Helper()
	return mqtttest.DialTLS(t, h.Addr, h.tlsConfig(cert))
}

// device connects and subscribes a device: over TLS, or over WebSocket
// when ws.
func (h *harness) device(t testing.TB, ws bool, id string, c provtest.Cred) *mqtttest.Conn {
	t.Helper()
	var conn *mqtttest.Conn
	if ws {
		conn = mqtttest.DialWebSocket(t, h.WSURL, h.tlsConfig(c.Cert), "mqtt")
	} else {
		conn = h.dial(t, c.Cert)
	}
	conn.MustConnect(h.Scope, id, c.SAS)
	if codes := conn.Subscribe(1, mqtt.ResponseFilter); !bytes.Equal(codes, []byte{1}) {
		t.Fatalf("SUBACK %v, want [1]", codes)
	}
	return conn
}

func (h *harness) logContains(s string) bool { return strings.Contains(h.logs.String(), s) }

// waitLog waits until the server log contains s.
func (h *harness) waitLog(t testing.TB, s string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !h.logContains(s) {
		if time.Now().After(deadline) {
			t.Fatalf("the server log does not contain %q", s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fake is a scripted provisioner that records requests.
type fake struct {
	mu       sync.Mutex
	requests []fakeCall
	register func(req provisioning.Request) (*provisioning.Answer, error)
	poll     func(req provisioning.Request, operationID string) (*provisioning.Answer, error)
}

type fakeCall struct {
	Req         provisioning.Request
	OperationID string
}

func (f *fake) Register(ctx context.Context, req provisioning.Request) (*provisioning.Answer, error) {
	f.mu.Lock()
	f.requests = append(f.requests, fakeCall{Req: req})
	fn := f.register
	f.mu.Unlock()
	if fn != nil {
		return fn(req)
	}
	return &provisioning.Answer{Status: 202, Body: &dps.RegistrationOperationStatus{OperationID: "5.op." + req.RegistrationID, Status: dps.StatusAssigned,
		RegistrationState: &dps.DeviceRegistrationResult{RegistrationID: req.RegistrationID, DeviceID: req.RegistrationID, AssignedHub: hub1, Status: dps.StatusAssigned}}}, nil
}

func (f *fake) OperationStatus(ctx context.Context, req provisioning.Request, operationID string) (*provisioning.Answer, error) {
	f.mu.Lock()
	f.requests = append(f.requests, fakeCall{Req: req, OperationID: operationID})
	fn := f.poll
	f.mu.Unlock()
	if fn != nil {
		return fn(req, operationID)
	}
	return &provisioning.Answer{Status: 200, Body: &dps.RegistrationOperationStatus{OperationID: operationID, Status: dps.StatusAssigned,
		RegistrationState: &dps.DeviceRegistrationResult{RegistrationID: req.RegistrationID, DeviceID: req.RegistrationID, AssignedHub: hub1, Status: dps.StatusAssigned}}}, nil
}

func (f *fake) Refused(_ *provisioning.Request, _ string, err error) error { return err }

func (f *fake) set(register func(provisioning.Request) (*provisioning.Answer, error), poll func(provisioning.Request, string) (*provisioning.Answer, error)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.register, f.poll = register, poll
}

func (f *fake) last(t testing.TB) fakeCall {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.requests) == 0 {
		t.Fatal("the provisioner received no request")
	}
	return f.requests[len(f.requests)-1]
}

func (f *fake) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.requests)
}
