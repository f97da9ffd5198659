package e2e_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dpsd/dpsd/client"
	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/test/e2e"
)

// TestImportIntoServedSQLite: `dpsd import` into the SQLite database a
// running dpsd serves. dpsd holds the enrollment groups in memory; the
// group the import disables is disabled for the very next registration,
// without a restart.
func TestImportIntoServedSQLite(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := e2e.StartServer(t)
	mnLinkHub(t, s)
	groupKey := mnGroup(t, s, "fleet")
	dev := func(id string) *mnDevice { return mnNewDevice(t, s, id, client.DeriveKey(groupKey, id)) }
	// dpsd reads the group, and keeps it.
	mnWantAssigned(t, s, dev("fleet-1"), mnHub)
	mnWantAssigned(t, s, dev("fleet-1"), mnHub)

	// The export, with the group disabled.
	file := filepath.Join(dir, "dpsd-export.jsonl")
	devCLI(t, dir, "export", "--data", s.Dir, file)
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	edited := false
	for l := range bytes.Lines(b) {
		var rec struct {
			Group *dps.EnrollmentGroup `json:"enrollmentGroup"`
		}
		if err := json.Unmarshal(l, &rec); err != nil {
			t.Fatal(err)
		}
		if rec.Group != nil {
			rec.Group.ProvisioningStatus = dps.ProvisioningDisabled
			if l, err = json.Marshal(rec); err != nil {
				t.Fatal(err)
			}
			l = append(l, '\n')
			edited = true
		}
		out.Write(l)
	}
	if !edited {
		t.Fatalf("the export holds no enrollment group:\n%s", b)
	}
	if err := os.WriteFile(file, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}

	// Imported into the database dpsd serves: no restart needed, and the
	// import says none is.
	if got := devCLI(t, dir, "import", "--data", s.Dir, file); !strings.Contains(got, "imported instance "+s.IDScope) || strings.Contains(got, "restart") {
		t.Fatalf("dpsd import printed:\n%s", got)
	}
	for _, id := range []string{"fleet-1", "fleet-2"} {
		if got := mnRegister(t, s, dev(id)); got.status != http.StatusAccepted || got.str("status") != dps.StatusDisabled {
			t.Fatalf("%s right after the import disabled its group: %d %s", id, got.status, got.raw)
		}
	}
}
