package e2e_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/client"
	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/test/e2e"
)

// TestExportSQLiteImportPostgres moves an instance that outgrew one machine:
// devices register on a node with the embedded SQLite store, the instance
// is exported, imported into PostgreSQL, and a node on PostgreSQL takes
// over. The devices register unchanged (same ID scope, same server CA to
// trust, same keys and certificates), their records keep their creation
// time, and service clients see the same etags and keys.
func TestExportSQLiteImportPostgres(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	old := e2e.StartServer(t)
	mnLinkHub(t, old)
	groupKey := mnGroup(t, old, "fleet")
	soloKey := sas.NewKey(32)
	mnMust(t, mnService(t, old, http.MethodPut, "/enrollments/solo", "", map[string]any{
		"registrationId": "solo",
		"attestation":    map[string]any{"type": "symmetricKey", "symmetricKey": map[string]any{"primaryKey": soloKey, "secondaryKey": sas.NewKey(32)}},
	}, nil), "create the symmetric-key enrollment")
	devCLI(t, dir, "cert", "create-self-signed", "--common-name", "x509-dev")
	certPEM, err := os.ReadFile(filepath.Join(dir, "device-cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	mnMust(t, mnService(t, old, http.MethodPut, "/enrollments/x509-dev", "", map[string]any{
		"registrationId": "x509-dev",
		"attestation":    map[string]any{"type": "x509", "x509": map[string]any{"clientCertificates": map[string]any{"primary": map[string]any{"certificate": string(certPEM)}}}},
	}, nil), "create the X.509 enrollment")
	cert, err := client.LoadX509KeyPair(filepath.Join(dir, "device-cert.pem"), filepath.Join(dir, "device-key.pem"), nil)
	if err != nil {
		t.Fatal(err)
	}
	soloKeyBytes, _ := base64.StdEncoding.DecodeString(soloKey)
	// The devices as they are configured in the field: endpoint, scope,
	// credentials and the CA file of the first server.
	roots := mnRoots(t, old)
	devices := map[string]client.Config{
		"fleet-1":  {RegistrationID: "fleet-1", SymmetricKey: client.DeriveKey(groupKey, "fleet-1")},
		"fleet-2":  {RegistrationID: "fleet-2", SymmetricKey: client.DeriveKey(groupKey, "fleet-2")},
		"solo":     {RegistrationID: "solo", SymmetricKey: soloKeyBytes},
		"x509-dev": {RegistrationID: "x509-dev", Certificate: &cert},
	}
	register := func(s *e2e.Server, cfg client.Config) *client.RegistrationState {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cfg.Endpoint, cfg.IDScope, cfg.RootCAs = s.DeviceEndpoint, old.IDScope, roots
		st, err := client.Register(ctx, cfg)
		if err != nil {
			t.Fatalf("register %s on %s: %v", cfg.RegistrationID, s.DeviceEndpoint, err)
		}
		return st
	}
	first := map[string]*client.RegistrationState{}
	for id, cfg := range devices {
		first[id] = register(old, cfg)
	}
	var soloBefore dps.IndividualEnrollment
	mnMust(t, mnService(t, old, http.MethodGet, "/enrollments/solo", "", nil, &soloBefore), "read the enrollment")
	old.Stop()

	// Export: a file only its owner can read.
	file := filepath.Join(dir, "dpsd-export.jsonl")
	out := devCLI(t, dir, "export", "--data", old.Dir, file)
	if !strings.Contains(out, "exported instance "+old.IDScope) || !strings.Contains(out, "1 enrollment group, 2 enrollments, 4 registration records") {
		t.Fatalf("dpsd export printed:\n%s", out)
	}
	if !strings.Contains(out, "0600") || !strings.Contains(out, "private key") {
		t.Fatalf("dpsd export does not say the file holds secrets:\n%s", out)
	}
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("the export is mode %v, want 0600", fi.Mode().Perm())
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*partial*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}

	// Import into an empty PostgreSQL database, and serve from it.
	dsn := mnDatabase(t)
	out = devCLI(t, dir, "import", "--store", dsn, file)
	if !strings.Contains(out, "imported instance "+old.IDScope) || !strings.Contains(out, "4 registration records") {
		t.Fatalf("dpsd import printed:\n%s", out)
	}
	pg := e2e.StartServer(t, "--store", dsn)
	mnSameInstance(t, old, pg)

	for id, cfg := range devices {
		st := register(pg, cfg)
		was := first[id]
		if st.CreatedDateTimeUTC != was.CreatedDateTimeUTC || st.AssignedHub != was.AssignedHub || st.DeviceID != was.DeviceID ||
			st.Substatus != dps.SubstatusReprovisionedToInitialAssignment || st.Etag == was.Etag {
			t.Fatalf("%s re-registered on PostgreSQL: %+v\nbefore, on SQLite: %+v", id, st, was)
		}
	}
	// A device that never registered before registers too.
	if st := register(pg, client.Config{RegistrationID: "fleet-3", SymmetricKey: client.DeriveKey(groupKey, "fleet-3")}); st.Substatus != dps.SubstatusInitialAssignment {
		t.Fatalf("a new device on PostgreSQL: %+v", st)
	}
	// Service clients see the same etags.
	var soloAfter dps.IndividualEnrollment
	mnMust(t, mnService(t, pg, http.MethodGet, "/enrollments/solo", "", nil, &soloAfter), "read the enrollment on PostgreSQL")
	if soloAfter.Etag != soloBefore.Etag || !soloAfter.CreatedDateTimeUtc.Equal(soloBefore.CreatedDateTimeUtc.Time) {
		t.Fatalf("the enrollment on PostgreSQL: etag %s created %v; on SQLite %s %v", soloAfter.Etag, soloAfter.CreatedDateTimeUtc,
			soloBefore.Etag, soloBefore.CreatedDateTimeUtc)
	}
	soloAfter.RegistrationState = nil
	mnMust(t, mnService(t, pg, http.MethodPut, "/enrollments/solo", soloBefore.Etag, &soloAfter, nil), "update with the etag read on SQLite")
}

// TestImportRefusesAnotherInstance imports into a PostgreSQL database that
// serves an instance of its own: refused, with a hint, unless --force.
func TestImportRefusesAnotherInstance(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src := e2e.StartServer(t)
	src.Stop()
	file := filepath.Join(dir, "export.jsonl")
	devCLI(t, dir, "export", "--data", src.Dir, file)

	dsn := mnDatabase(t)
	other := e2e.StartServer(t, "--store", dsn)
	other.Stop()
	_, errOut, err := devRun(t, dir, "import", "--store", dsn, file)
	if err == nil || !strings.Contains(errOut, "another instance") || !strings.Contains(errOut, other.IDScope) || !strings.Contains(errOut, "--force") {
		t.Fatalf("import into another instance: %v\n%s", err, errOut)
	}
	if out := devCLI(t, dir, "info", "--store", dsn, "idScope"); strings.TrimSpace(out) != other.IDScope {
		t.Fatalf("the refused import changed the instance to %s", out)
	}
	devCLI(t, dir, "import", "--force", "--store", dsn, file)
	if out := devCLI(t, dir, "info", "--store", dsn, "idScope"); strings.TrimSpace(out) != src.IDScope {
		t.Fatalf("after import --force the database serves %s, want %s", out, src.IDScope)
	}
	// The file can be read from standard input too, and importing again is
	// harmless.
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	cmd := mnCommand(t, dir, "import", "--store", dsn, "-")
	cmd.Stdin = bytes.NewReader(b)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("import from standard input: %v\n%s", err, out)
	}
}
