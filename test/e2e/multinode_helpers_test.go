package e2e_test

// Helpers of the multi-node tests (multinode_*_test.go) and of the export
// tests (export_*_test.go): several dpsd nodes on one PostgreSQL database.
// Their names start with "mn".

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/client"
	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/store/storetest"
	"github.com/dpsd/dpsd/internal/svcclient"
	"github.com/dpsd/dpsd/test/e2e"
)

// mnHub is the linked hub of the multi-node tests.
const mnHub = "hub1.azure-devices.net"

// mnDatabase returns the DSN of a new database of its own on the test
// PostgreSQL, dropped when the test ends. In CI a missing server fails the
// test; elsewhere it skips.
func mnDatabase(t *testing.T) string {
	t.Helper()
	return storetest.PostgresDatabase(t, storetest.PostgresDSN(t))
}

// mnCluster starts n nodes together on one new database and checks that
// they serve one instance.
func mnCluster(t *testing.T, n int, extraArgs ...string) (nodes []*e2e.Server, dsn string) {
	t.Helper()
	dsn = mnDatabase(t)
	nodes = e2e.StartServers(t, n, append([]string{"--store", dsn}, extraArgs...)...)
	mnSameInstance(t, nodes...)
	return nodes, dsn
}

// mnSameInstance fails t unless the nodes serve one instance: one ID scope,
// one server CA, one owner policy.
func mnSameInstance(t *testing.T, nodes ...*e2e.Server) {
	t.Helper()
	ca0, err := os.ReadFile(nodes[0].CAFile)
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes[1:] {
		ca, err := os.ReadFile(n.CAFile)
		if err != nil {
			t.Fatal(err)
		}
		if n.IDScope != nodes[0].IDScope || !bytes.Equal(ca, ca0) || mnKey(n.ConnString) != mnKey(nodes[0].ConnString) {
			t.Fatalf("node %d serves ID scope %s with its own CA or owner key; node 0 serves %s", i+1, n.IDScope, nodes[0].IDScope)
		}
	}
}

// mnKey is the SharedAccessKey of a connection string.
func mnKey(cs string) string {
	_, k, _ := strings.Cut(cs, "SharedAccessKey=")
	return k
}

// mnRoots is the pool of a node's server CA.
func mnRoots(t *testing.T, s *e2e.Server) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(s.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("%s holds no certificate", s.CAFile)
	}
	return pool
}

// mnService calls the service API of a node as its owner policy.
func mnService(t *testing.T, s *e2e.Server, method, path, ifMatch string, body, out any) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := s.Client(t).Do(ctx, svcclient.Request{Method: method, Path: path, IfMatch: ifMatch, Body: body}, out)
	return err
}

func mnMust(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// mnStatus is the HTTP status of a service API error (0 for others).
func mnStatus(err error) int {
	var e *svcclient.Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// mnLinkHub links mnHub through node s.
func mnLinkHub(t *testing.T, s *e2e.Server) {
	t.Helper()
	mnMust(t, mnService(t, s, http.MethodPut, "/linkedhubs/"+mnHub, "", map[string]any{
		"connectionString": "HostName=" + mnHub + ";SharedAccessKeyName=iothubowner;SharedAccessKey=" + sas.NewKey(32),
	}, nil), "link the hub")
}

// mnGroup creates a symmetric-key enrollment group through node s and
// returns its primary key.
func mnGroup(t *testing.T, s *e2e.Server, id string) []byte {
	t.Helper()
	key := sas.NewKey(32)
	mnMust(t, mnService(t, s, http.MethodPut, "/enrollmentgroups/"+id, "", map[string]any{
		"enrollmentGroupId": id,
		"attestation":       map[string]any{"type": "symmetricKey", "symmetricKey": map[string]any{"primaryKey": key, "secondaryKey": sas.NewKey(32)}},
	}, nil), "create group "+id)
	b, _ := base64.StdEncoding.DecodeString(key)
	return b
}

// mnDevice speaks the device API over HTTPS, with a SAS token or a client
// certificate, to any node.
type mnDevice struct {
	scope, id string
	key       []byte // nil for an X.509 or a TPM device
	// auth, when key is nil, is the Authorization header ("" for none):
	// a TPM's token.
	auth string
	http *http.Client
}

func mnNewDevice(t *testing.T, s *e2e.Server, id string, key []byte) *mnDevice {
	return mnNewDeviceTLS(t, s, id, key, nil)
}

// mnNewX509Device is a device that presents cert in the TLS handshake.
func mnNewX509Device(t *testing.T, s *e2e.Server, id string, cert *tls.Certificate) *mnDevice {
	return mnNewDeviceTLS(t, s, id, nil, cert)
}

func mnNewDeviceTLS(t *testing.T, s *e2e.Server, id string, key []byte, cert *tls.Certificate) *mnDevice {
	tc := &tls.Config{RootCAs: mnRoots(t, s), ServerName: "localhost", MinVersion: tls.VersionTLS12}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	return &mnDevice{scope: s.IDScope, id: id, key: key, http: &http.Client{Timeout: 30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}}}
}

// mnAnswer is a device API answer.
type mnAnswer struct {
	status     int
	retryAfter string
	body       map[string]any
	raw        string
}

func (a *mnAnswer) str(path string) string { return str(a.body, path) }

// do sends a device API request to endpoint and fails t on a network error.
func (d *mnDevice) do(t *testing.T, endpoint, method, suffix string, body any) *mnAnswer {
	t.Helper()
	a, err := d.try(endpoint, method, suffix, body)
	if err != nil {
		t.Fatalf("%s %s on %s: %v", method, suffix, endpoint, err)
	}
	return a
}

func (d *mnDevice) try(endpoint, method, suffix string, body any) (*mnAnswer, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "https://"+endpoint+"/"+d.scope+"/registrations/"+d.id+suffix+"?api-version=2021-06-01", rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if d.key != nil {
		req.Header.Set("Authorization", client.SASToken(d.scope, d.id, d.key, time.Now().Add(time.Hour)))
	} else if d.auth != "" {
		req.Header.Set("Authorization", d.auth)
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	a := &mnAnswer{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), raw: string(b)}
	json.Unmarshal(b, &a.body)
	return a, nil
}

func (d *mnDevice) register(t *testing.T, endpoint string) *mnAnswer {
	t.Helper()
	return d.do(t, endpoint, http.MethodPut, "/register", map[string]any{"registrationId": d.id})
}

func (d *mnDevice) poll(t *testing.T, endpoint, operationID string) *mnAnswer {
	t.Helper()
	return d.do(t, endpoint, http.MethodGet, "/operations/"+operationID, nil)
}

// mnRegister registers d through node s, expecting the answer at once
// (without --azure-strict, a registration that calls nothing out is
// decided within its request).
func mnRegister(t *testing.T, s *e2e.Server, d *mnDevice) *mnAnswer {
	t.Helper()
	got := d.register(t, s.DeviceEndpoint)
	if got.str("status") == dps.StatusAssigning {
		t.Fatalf("%s: the registration through %s is still assigning: %s", d.id, s.DeviceEndpoint, got.raw)
	}
	return got
}

// mnWantAssigned registers d through node s and fails t unless it is
// assigned to hub.
func mnWantAssigned(t *testing.T, s *e2e.Server, d *mnDevice, hub string) {
	t.Helper()
	got := mnRegister(t, s, d)
	if got.status != http.StatusAccepted || got.str("status") != dps.StatusAssigned || got.str("registrationState.assignedHub") != hub {
		t.Fatalf("%s through %s: %d %s; want assigned to %s", d.id, s.DeviceEndpoint, got.status, got.raw, hub)
	}
}

// mnGetGroup reads an enrollment group through node s.
func mnGetGroup(t *testing.T, s *e2e.Server, id string) *dps.EnrollmentGroup {
	t.Helper()
	var g dps.EnrollmentGroup
	mnMust(t, mnService(t, s, http.MethodGet, "/enrollmentgroups/"+id, "", nil, &g), "read group "+id)
	return &g
}

// mnDB opens the database of the nodes, for checks no API offers.
func mnDB(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// mnCount runs a COUNT query.
func mnCount(t *testing.T, db *sql.DB, query string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// mnLocalAddr turns a node's endpoint (localhost:PORT) into the address it
// listens on.
func mnLocalAddr(endpoint string) string {
	_, port, _ := net.SplitHostPort(endpoint)
	return "127.0.0.1:" + port
}

// mnLogLines counts the lines of a node's log that hold every part.
func mnLogLines(s *e2e.Server, parts ...string) int {
	n := 0
	for _, line := range strings.Split(s.Logs(), "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			n++
		}
	}
	return n
}

// mnCommand is `dpsd args...` in dir, for a caller that sets its input.
func mnCommand(t *testing.T, dir string, args ...string) *exec.Cmd {
	cmd := exec.Command(e2e.Binary(t), args...)
	cmd.Dir = dir
	return cmd
}
