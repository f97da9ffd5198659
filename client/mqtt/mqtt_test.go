package mqtt_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dpsd/dpsd/client"
	"github.com/dpsd/dpsd/client/mqtt"
	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	imqtt "github.com/dpsd/dpsd/internal/mqtt"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/provisioning"
	"github.com/dpsd/dpsd/internal/provisioning/provtest"
	"github.com/dpsd/dpsd/internal/server"
	"github.com/dpsd/dpsd/internal/server/servertest"
	"github.com/dpsd/dpsd/internal/testutil"
)

const hub = provtest.Hub1

// testServer is `dpsd serve` in-process (servertest) with its MQTT
// listener and the WebSocket route on the HTTPS listener.
type testServer struct {
	*servertest.Server
	provtest.Instance
}

func startServer(t *testing.T, strict bool) *testServer {
	t.Helper()
	srv := servertest.Start(t, server.Config{MQTTAddr: "127.0.0.1:0", AzureStrict: strict, RetryAfter: 1})
	ts := &testServer{Server: srv, Instance: provtest.Instance{T: t, Store: srv.Store(), Scope: srv.State.IDScope}}
	if srv.MQTTAddr == "" {
		t.Fatalf("server.json has no mqttEndpoint: %+v", srv.State)
	}
	ts.LinkHub(hub, 1, true)
	return ts
}

func (ts *testServer) config(ws bool, id string) mqtt.Config {
	ep := ts.MQTTAddr
	if ws {
		ep = ts.DeviceAddr
	}
	return mqtt.Config{Config: client.Config{Endpoint: ep, IDScope: ts.Scope, RegistrationID: id, RootCAs: ts.Roots, UserAgent: "dpsd-test/1"}, WebSocket: ws}
}

// symKey is the primary key of a stored symmetric-key enrollment.
func symKey(t *testing.T, a *dps.AttestationMechanism) []byte {
	t.Helper()
	k, _ := provtest.Keys(t, a)
	return k
}

func selfSignedDevice(t *testing.T, ts *testServer, id string) *tls.Certificate {
	t.Helper()
	c, k := testutil.SelfSigned(t, pki.Options{CommonName: id})
	ts.PutIndividual(provtest.X509Individual(id, c, nil))
	return testutil.TLSCert(k, c)
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestRegister registers X.509 and symmetric-key devices over both MQTT
// transports of a real server, in fast and strict mode.
func TestRegister(t *testing.T) {
	for _, strict := range []bool{false, true} {
		t.Run(map[bool]string{false: "fast", true: "strict"}[strict], func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, strict)
			cert := selfSignedDevice(t, ts, "x509-dev")
			indKey := symKey(t, ts.PutIndividual(provtest.SymIndividual("sym-dev")).Attestation)
			grpKey := symKey(t, ts.PutGroup(provtest.SymGroup("grp")).Attestation)
			for _, ws := range []bool{false, true} {
				for _, dev := range []struct {
					id    string
					cert  *tls.Certificate
					key   []byte
					group string
				}{
					{"x509-dev", cert, nil, ""},
					{"sym-dev", nil, indKey, ""},
					{"grp-dev-1", nil, client.DeriveKey(grpKey, "grp-dev-1"), "grp"},
				} {
					t.Run(dev.id+map[bool]string{false: "/mqtt", true: "/mqtt-ws"}[ws], func(t *testing.T) {
						cfg := ts.config(ws, dev.id)
						cfg.Certificate, cfg.SymmetricKey = dev.cert, dev.key
						cfg.Payload = []byte(`{"modelId":"dtmi:x;1"}`)
						st, err := mqtt.Register(ctxTimeout(t, 30*time.Second), cfg)
						if err != nil {
							t.Fatalf("Register: %v", err)
						}
						if st.Status != "assigned" || st.AssignedHub != hub || st.DeviceID != dev.id {
							t.Errorf("state %+v", st)
						}
						if dev.group != "" && (st.SymmetricKey == nil || st.SymmetricKey.EnrollmentGroupID != dev.group) {
							t.Errorf("symmetricKey %+v", st.SymmetricKey)
						}
					})
				}
			}
		})
	}
}

// TestRefused: a refusal is a *client.Error, a disabled enrollment a
// *client.StatusError, as with HTTPS.
func TestRefused(t *testing.T) {
	ts := startServer(t, false)
	key := symKey(t, ts.PutIndividual(provtest.SymIndividual("sym-dev")).Attestation)
	off := provtest.SymIndividual("sym-off")
	off.ProvisioningStatus = dps.ProvisioningDisabled
	disabledKey := symKey(t, ts.PutIndividual(off).Attestation)
	for _, ws := range []bool{false, true} {
		cfg := ts.config(ws, "sym-dev")
		cfg.SymmetricKey = append([]byte{1}, key[1:]...)
		_, err := mqtt.Register(ctxTimeout(t, 30*time.Second), cfg)
		var ce *client.Error
		if !errors.As(err, &ce) || ce.StatusCode != 401 || ce.ErrorCode != dpserr.CodeUnauthorized || !strings.Contains(ce.Message, "signature matches neither") || ce.TrackingID == "" {
			t.Errorf("wrong key: %v", err)
		}
		cfg = ts.config(ws, "sym-off")
		cfg.SymmetricKey = disabledKey
		st, err := mqtt.Register(ctxTimeout(t, 30*time.Second), cfg)
		var se *client.StatusError
		if !errors.As(err, &se) || st == nil || st.Status != "disabled" {
			t.Errorf("disabled: %v, %+v", err, st)
		}
		// An untrusted server certificate is final, not retried.
		cfg = ts.config(ws, "sym-dev")
		cfg.SymmetricKey, cfg.RootCAs = key, x509.NewCertPool()
		start := time.Now()
		if _, err := mqtt.Register(ctxTimeout(t, 30*time.Second), cfg); err == nil || time.Since(start) > 10*time.Second {
			t.Errorf("untrusted server: %v after %s", err, time.Since(start))
		}
	}
}

// fakeServer serves MQTT with a scripted provisioner.
func fakeServer(t *testing.T, p imqtt.Provisioner) (addr string, roots *x509.CertPool) {
	t.Helper()
	root := testutil.NewRoot(t, pki.Options{CommonName: "Test Root"})
	leaf, key := root.Leaf(t, pki.Options{CommonName: "localhost", Hosts: []string{"localhost", "127.0.0.1"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	s := &imqtt.Server{Provisioner: p, TLSConfig: &tls.Config{Certificates: []tls.Certificate{*testutil.TLSCert(key, leaf)}, ClientAuth: tls.RequestClientCert}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	roots = x509.NewCertPool()
	roots.AddCert(root.Cert)
	return ln.Addr().String(), roots
}

type script struct {
	mu       sync.Mutex
	register []func() (*provisioning.Answer, error)
	poll     []func() (*provisioning.Answer, error)
	nreg     int
	npoll    int
}

func (s *script) Register(ctx context.Context, req provisioning.Request) (*provisioning.Answer, error) {
	s.mu.Lock()
	f := s.register[min(s.nreg, len(s.register)-1)]
	s.nreg++
	s.mu.Unlock()
	return f()
}

func (s *script) OperationStatus(ctx context.Context, req provisioning.Request, id string) (*provisioning.Answer, error) {
	s.mu.Lock()
	f := s.poll[min(s.npoll, len(s.poll)-1)]
	s.npoll++
	s.mu.Unlock()
	return f()
}

func (s *script) Refused(_ *provisioning.Request, _ string, err error) error { return err }

func (s *script) counts() (int, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nreg, s.npoll
}

func assigning(retry int) func() (*provisioning.Answer, error) {
	return func() (*provisioning.Answer, error) {
		return &provisioning.Answer{Status: http.StatusAccepted, RetryAfter: retry, Body: &dps.RegistrationOperationStatus{OperationID: "op-1", Status: dps.StatusAssigning}}, nil
	}
}

func assigned() (*provisioning.Answer, error) {
	return &provisioning.Answer{Status: http.StatusOK, Body: &dps.RegistrationOperationStatus{OperationID: "op-1", Status: dps.StatusAssigned,
		RegistrationState: &dps.DeviceRegistrationResult{RegistrationID: "dev", DeviceID: "dev", AssignedHub: hub, Status: dps.StatusAssigned}}}, nil
}

// TestRetryAfter: 429 and 503 answers are retried after their retry-after,
// an assigning answer is polled after its retry-after.
func TestRetryAfter(t *testing.T) {
	s := &script{
		register: []func() (*provisioning.Answer, error){
			func() (*provisioning.Answer, error) {
				return nil, &dpserr.Error{Status: 429, Code: dpserr.CodeThrottled, Message: "throttled", RetryAfter: 1}
			},
			func() (*provisioning.Answer, error) { return nil, dpserr.Unavailable(errors.New("db")) },
			assigning(1),
		},
		poll: []func() (*provisioning.Answer, error){assigning(1), assigned},
	}
	addr, roots := fakeServer(t, s)
	start := time.Now()
	// The 503's retry-after is 5 s.
	st, err := mqtt.Register(ctxTimeout(t, 30*time.Second), mqtt.Config{Config: client.Config{Endpoint: addr, IDScope: "0ne00000001", RegistrationID: "dev", SymmetricKey: []byte("k"), RootCAs: roots}})
	if err != nil || st.AssignedHub != hub {
		t.Fatalf("Register: %+v, %v", st, err)
	}
	if d := time.Since(start); d < 8*time.Second {
		t.Errorf("done after %s, want ≥ 1 + 5 + 1 + 1 s of retry-after", d)
	}
	if r, p := s.counts(); r != 3 || p != 2 {
		t.Errorf("%d registers, %d polls; want 3, 2", r, p)
	}
}

// TestResumeAfterNoAnswer: when an answer does not come, the client
// reconnects and polls the same operation again (it does not register
// again).
func TestResumeAfterNoAnswer(t *testing.T) {
	release := make(chan struct{})
	s := &script{
		register: []func() (*provisioning.Answer, error){assigning(1)},
		poll: []func() (*provisioning.Answer, error){
			func() (*provisioning.Answer, error) { <-release; return assigned() },
			assigned,
		},
	}
	addr, roots := fakeServer(t, s)
	defer close(release)
	cfg := mqtt.Config{Config: client.Config{Endpoint: addr, IDScope: "0ne00000001", RegistrationID: "dev", SymmetricKey: []byte("k"), RootCAs: roots}, ResponseTimeout: time.Second}
	st, err := mqtt.Register(ctxTimeout(t, 30*time.Second), cfg)
	if err != nil || st.Status != "assigned" {
		t.Fatalf("Register: %+v, %v", st, err)
	}
	if r, p := s.counts(); r != 1 || p != 2 {
		t.Errorf("%d registers, %d polls; want 1, 2", r, p)
	}
}

// TestContextEnds: Register returns when its context ends.
func TestContextEnds(t *testing.T) {
	block := make(chan struct{})
	s := &script{register: []func() (*provisioning.Answer, error){func() (*provisioning.Answer, error) { <-block; return assigned() }}}
	addr, roots := fakeServer(t, s)
	defer close(block)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	_, err := mqtt.Register(ctx, mqtt.Config{Config: client.Config{Endpoint: addr, IDScope: "s", RegistrationID: "dev", SymmetricKey: []byte("k"), RootCAs: roots}})
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Errorf("got %v after %s", err, time.Since(start))
	}
}

func TestConfigErrors(t *testing.T) {
	ctx := context.Background()
	for name, cfg := range map[string]mqtt.Config{
		"no id scope":      {Config: client.Config{RegistrationID: "d", SymmetricKey: []byte("k")}},
		"no credentials":   {Config: client.Config{IDScope: "s", RegistrationID: "d"}},
		"both credentials": {Config: client.Config{IDScope: "s", RegistrationID: "d", SymmetricKey: []byte("k"), Certificate: &tls.Certificate{}}},
	} {
		if _, err := mqtt.Register(ctx, cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	_, err := mqtt.Register(ctx, mqtt.Config{Config: client.Config{IDScope: "s", RegistrationID: "d", TPM: noTPM{}}})
	if err == nil || !strings.Contains(err.Error(), "TPM attestation is not available over MQTT") {
		t.Errorf("TPM over MQTT: %v", err)
	}
}

// noTPM is a client.TPM that is never used.
type noTPM struct{}

func (noTPM) EndorsementKey() ([]byte, error)  { panic("unused") }
func (noTPM) StorageRootKey() ([]byte, error)  { panic("unused") }
func (noTPM) ActivateIdentityKey([]byte) error { panic("unused") }
func (noTPM) Sign(data []byte) ([]byte, error) { panic("unused") }

func TestUsername(t *testing.T) {
	if got, want := mqtt.Username("0ne00111111", "dev-01", "2019-03-31", "dpsd/1.0 (linux)"), "0ne00111111/registrations/dev-01/api-version=2019-03-31&ClientVersion=dpsd%2F1.0+%28linux%29"; got != want {
		t.Errorf("Username = %q, want %q", got, want)
	}
	u, err := imqtt.ParseUsername(mqtt.Username("s", "d", "2019-03-31", "dpsd/1.0 (linux)"))
	if err != nil || u.ClientVersion != "dpsd/1.0 (linux)" || u.APIVersion != "2019-03-31" {
		t.Errorf("the server reads %+v, %v", u, err)
	}
}
