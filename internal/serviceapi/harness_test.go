package serviceapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/server"
	"github.com/dpsd/dpsd/internal/server/servertest"
	"github.com/dpsd/dpsd/internal/store"
	"github.com/dpsd/dpsd/internal/testutil"
)

// testServer is a real dpsd server (servertest: server.New + Serve, the
// same wiring as `dpsd serve`) on 127.0.0.1 with a fresh SQLite store in
// t.TempDir().
type testServer struct {
	t       testing.TB
	Store   store.Store
	Host    string // localhost:port, the HostName of the connection string
	IDScope string
	// ownerKey is the owner policy's key as the server started; requests
	// use it by default, also after a test deleted or changed the policy.
	ownerKey []byte
	client   *http.Client
}

// startServer starts a server and stops it when the test ends, checking that
// it shuts down cleanly. The server log is printed if the test failed.
func startServer(t testing.TB) *testServer {
	t.Helper()
	return startServerWith(t, server.Config{})
}

// startServerWith is startServer with a configuration.
func startServerWith(t testing.TB, cfg server.Config) *testServer {
	t.Helper()
	srv := servertest.Start(t, cfg)
	s := &testServer{
		t: t, Store: srv.Store(), Host: srv.State.ServiceEndpoint, IDScope: srv.State.IDScope, client: srv.HTTPClient(t),
	}
	s.ownerKey = s.policyKey(dps.OwnerPolicyName)
	return s
}

// policyKey returns the primary key of a policy, read from the store.
func (s *testServer) policyKey(name string) []byte {
	s.t.Helper()
	p, err := s.Store.Policy(context.Background(), name)
	if err != nil {
		s.t.Fatalf("policy %s: %v", name, err)
	}
	k, err := sas.DecodeKey(p.PrimaryKey)
	if err != nil {
		s.t.Fatal(err)
	}
	return k
}

// token returns a valid SAS token of a policy for this server, as the C and
// C# SDKs make it (sr URL-encoded).
func (s *testServer) token(policy string) string {
	return sas.New(s.Host, policy, s.policyKey(policy), time.Now().Add(time.Hour), true)
}

// response is an answer with its body read.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// do sends one request. headers are sent as given; Authorization is the
// owner's token unless headers set it ("" removes it).
func (s *testServer) do(method, path string, headers map[string]string, body []byte) *response {
	s.t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, "https://"+s.Host+path, r)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	req.Header.Set("Authorization", sas.New(s.Host, dps.OwnerPolicyName, s.ownerKey, time.Now().Add(time.Hour), true))
	for k, v := range headers {
		switch {
		case strings.EqualFold(k, "Authorization") && v == "":
			req.Header.Del(k)
		case k == "Host":
			req.Host = v
		default:
			req.Header.Set(k, v)
		}
	}
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatalf("%s %s: reading the answer: %v", method, path, err)
	}
	return &response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// doJSON is do with a JSON-encoded body (nil: no body) that expects want and
// decodes the answer into out (when not nil).
func (s *testServer) doJSON(method, path string, headers map[string]string, in any, want int, out any) *response {
	s.t.Helper()
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			s.t.Fatal(err)
		}
	}
	resp := s.do(method, path, headers, body)
	if resp.Status != want {
		s.t.Fatalf("%s %s: status %d, want %d: %s", method, path, resp.Status, want, resp.Body)
	}
	if out != nil {
		if err := json.Unmarshal(resp.Body, out); err != nil {
			s.t.Fatalf("%s %s: decoding %s: %v", method, path, resp.Body, err)
		}
	}
	return resp
}

// snapshot is everything the service API can change, read straight from the
// store, for "the store is unchanged" assertions.
type snapshot struct {
	Enrollments   []*dps.IndividualEnrollment
	Groups        []*dps.EnrollmentGroup
	CAs           []*store.CACertificate
	Hubs          []*store.LinkedHub
	Policies      []*store.Policy
	Registrations map[string]*store.Registration
	Instance      string
	IssuingCAs    []*store.IssuingCA
	Issued        []*store.IssuedCertificate
}

// snapshot reads the store. Registrations are read by ID for the IDs given
// (the store has no list of all records).
func (s *testServer) snapshot(registrationIDs ...string) string {
	s.t.Helper()
	ctx := context.Background()
	var snap snapshot
	snap.Enrollments = testutil.All(s.t, s.Store.Enrollments)
	snap.Groups = testutil.All(s.t, s.Store.Groups)
	var err error
	if snap.CAs, err = s.Store.CACertificates(ctx); err != nil {
		s.t.Fatal(err)
	}
	if snap.Hubs, err = s.Store.LinkedHubs(ctx); err != nil {
		s.t.Fatal(err)
	}
	if snap.Policies, err = s.Store.Policies(ctx); err != nil {
		s.t.Fatal(err)
	}
	if snap.IssuingCAs, err = s.Store.IssuingCAs(ctx); err != nil {
		s.t.Fatal(err)
	}
	snap.Issued = testutil.All(s.t, func(ctx context.Context, after string, limit int) (store.Page[*store.IssuedCertificate], error) {
		return s.Store.IssuedCertificates(ctx, store.IssuedFilter{}, after, limit)
	})
	snap.Registrations = map[string]*store.Registration{}
	for _, id := range registrationIDs {
		r, err := s.Store.Registration(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			s.t.Fatal(err)
		}
		snap.Registrations[id] = r
	}
	inst, err := s.Store.Instance(ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	snap.Instance = inst.IDScope + " " + inst.AllocationPolicy
	b, err := json.MarshalIndent(snap, "", "  ")
	if err != nil {
		s.t.Fatal(err)
	}
	return string(b)
}
