package e2e_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/dpsd/dpsd/test/e2e"
)

// TestDpsdLinksNoCgo: the dpsd binary is built with CGO_ENABLED=0 (Binary
// does so), and nothing cgo-only reaches it: the TPM simulator of the tests
// would build there as a stub that fails at run time.
func TestDpsdLinksNoCgo(t *testing.T) {
	e2e.Binary(t)
	root, err := e2e.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "list", "-deps", "./cmd/dpsd")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "github.com/google/go-tpm-tools") || strings.HasSuffix(pkg, "/internal/tpmsim") || pkg == "testing" {
			t.Errorf("cmd/dpsd depends on %s", pkg)
		}
	}
}
