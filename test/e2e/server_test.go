package e2e_test

import (
	"context"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/svcclient"
	"github.com/dpsd/dpsd/test/e2e"
)

// TestServerLifecycle checks the helpers and what they rely on: dpsd serve
// writes server.json once listening, dpsd info prints a working connection
// string, SIGTERM ends the server with exit status 0, and a restart on the
// same data directory keeps the instance.
func TestServerLifecycle(t *testing.T) {
	t.Parallel()
	s := e2e.StartServer(t)
	if !regexp.MustCompile(`^0ne[0-9A-F]{8}$`).MatchString(s.IDScope) {
		t.Errorf("ID scope %q", s.IDScope)
	}
	if s.Port <= 0 || !strings.HasSuffix(s.ServiceEndpoint, ":"+strconv.Itoa(s.Port)) {
		t.Errorf("port %d, service endpoint %q", s.Port, s.ServiceEndpoint)
	}
	if !regexp.MustCompile(`^HostName=[^;]+;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=[A-Za-z0-9+/]+=*$`).MatchString(s.ConnString) {
		t.Errorf("connection string %q", s.ConnString)
	}
	if b, err := os.ReadFile(s.CAFile); err != nil || !strings.Contains(string(b), "BEGIN CERTIFICATE") {
		t.Errorf("CA file %s: %v", s.CAFile, err)
	}
	var settings dps.Settings
	if _, err := s.Client(t).Do(context.Background(), svcclient.Request{Method: http.MethodGet, Path: "/settings"}, &settings); err != nil {
		t.Fatalf("GET /settings with the connection string of dpsd info: %v", err)
	}
	if settings.IDScope != s.IDScope {
		t.Errorf("settings idScope %q, info %q", settings.IDScope, s.IDScope)
	}
	if _, err := s.Client(t).Do(context.Background(), svcclient.Request{Method: http.MethodPut, Path: "/enrollments/keep-me", Body: map[string]any{"attestation": map[string]any{"type": "symmetricKey"}}}, nil); err != nil {
		t.Fatal(err)
	}

	s.Stop()
	if !s.Exited() {
		t.Fatal("the server still runs after Stop")
	}
	if !strings.Contains(s.Logs(), "shutting down") {
		t.Errorf("no shutdown in the log:\n%s", s.Logs())
	}

	r := e2e.StartServerIn(t, s.Dir)
	if r.IDScope != s.IDScope || r.ConnString[strings.Index(r.ConnString, ";"):] != s.ConnString[strings.Index(s.ConnString, ";"):] {
		t.Errorf("after a restart: ID scope %q (was %q), connection string %q (was %q)", r.IDScope, s.IDScope, r.ConnString, s.ConnString)
	}
	var e dps.IndividualEnrollment
	if _, err := r.Client(t).Do(context.Background(), svcclient.Request{Method: http.MethodGet, Path: "/enrollments/keep-me"}, &e); err != nil {
		t.Errorf("the enrollment did not survive the restart: %v", err)
	}
}
