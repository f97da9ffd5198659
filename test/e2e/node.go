package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// NodeError is the error of an Azure SDK call, as the scripts of test/node
// print it.
type NodeError struct {
	Name       string `json:"name"`
	Message    string `json:"message"`
	StatusCode int    `json:"statusCode"`
	Body       string `json:"body"`
}

// nodeTimeout bounds one script.
const nodeTimeout = 3 * time.Minute

// NodeDir returns test/node, where the scripts and their node_modules live.
func NodeDir(t testing.TB) string {
	t.Helper()
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "test", "node")
}

// checkNode fails the test (it never skips: CI must not pass by skipping)
// when node or the SDK packages are missing.
func checkNode(t testing.TB, dir string) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed (%v): install Node.js 20, then run npm ci --prefix test/node", err)
	}
	for _, pkg := range []string{"azure-iot-provisioning-service", "azure-iot-provisioning-device", "azure-iot-common"} {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", pkg, "package.json")); err != nil {
			t.Fatalf("%s is not installed in %s: run npm ci --prefix test/node", pkg, filepath.Join(dir, "node_modules"))
		}
	}
	return node
}

// RunNode runs `node SCRIPT` in test/node with env added to the test's
// environment and returns its standard output. The test fails if the script
// exits non-zero, showing both outputs. script may carry arguments
// separated by spaces ("service-sdk.js query").
func RunNode(t testing.TB, script string, env map[string]string) (stdout string) {
	t.Helper()
	dir := NodeDir(t)
	node := checkNode(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), nodeTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, strings.Fields(script)...)
	cmd.Dir = dir
	cmd.Env = os.Environ()
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		cmd.Env = append(cmd.Env, k+"="+env[k])
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("node %s did not finish within %s\nstdout:\n%s\nstderr:\n%s", script, nodeTimeout, out.String(), errOut.String())
	}
	if err != nil {
		t.Fatalf("node %s: %v\nstdout:\n%s\nstderr:\n%s", script, err, out.String(), errOut.String())
	}
	if errOut.Len() > 0 {
		t.Logf("node %s stderr:\n%s", script, errOut.String())
	}
	return out.String()
}
