package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
	"github.com/spf13/cobra"

	"github.com/dpsd/dpsd/internal/server"
	"github.com/dpsd/dpsd/internal/server/servertest"
)

// noRaceExitSleep drops the second a race-enabled binary sleeps at exit:
// every exec of dpsd in a script is one (without it, go test -race spends
// most of its time in that sleep). A GORACE from the environment wins.
func noRaceExitSleep(e *testscript.Env) error {
	if os.Getenv("GORACE") == "" {
		e.Setenv("GORACE", "atexit_sleep_ms=0")
	}
	return nil
}

func cmdStartServer(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 0 {
		ts.Fatalf("usage: start-server")
	}
	dir := ts.MkAbs("dpsd-data")
	srv, err := servertest.Run(server.Config{DataDir: dir, HTTPSAddr: "127.0.0.1:0"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		ts.Fatalf("starting the server: %v", err)
	}
	ts.Defer(func() {
		if err := srv.Stop(); err != nil {
			ts.Logf("stopping the server: %v", err)
		}
	})
	servers.Store(ts, srv)
	ts.Setenv("DPSD_DATA", dir)
	ts.Setenv("DPSD_SERVICE", srv.State.ServiceEndpoint)
	ts.Setenv("SERVER_CA", filepath.Join(dir, server.CAFile))
}

// servers are the servers of the running scripts, by script.
var servers sync.Map // *testscript.TestScript → *servertest.Server

// cmdFlushJournal writes the refusals the script's server recorded so far.
func cmdFlushJournal(ts *testscript.TestScript, neg bool, args []string) {
	srv, ok := servers.Load(ts)
	if neg || len(args) != 0 || !ok {
		ts.Fatalf("usage: flush-journal, after start-server")
	}
	ts.Check(srv.(*servertest.Server).FlushJournal(context.Background()))
}

func cmdGrab(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: grab VAR REGEXP")
	}
	re, err := regexp.Compile(args[1])
	ts.Check(err)
	m := re.FindStringSubmatch(ts.ReadFile("stdout"))
	if len(m) < 2 {
		ts.Fatalf("no match for %q in stdout", args[1])
	}
	ts.Setenv(args[0], m[1])
}

func cmdJSONCount(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: json-count N")
	}
	var v any
	if err := json.Unmarshal([]byte(ts.ReadFile("stdout")), &v); err != nil {
		ts.Fatalf("stdout is not JSON: %v", err)
	}
	if obj, ok := v.(map[string]any); ok {
		v = obj["value"]
	}
	arr, ok := v.([]any)
	if !ok {
		ts.Fatalf("stdout is not a JSON array")
	}
	got := fmt.Sprint(len(arr))
	if (got == args[0]) == neg {
		ts.Fatalf("stdout has %s items; want %s%s", got, map[bool]string{true: "not ", false: ""}[neg], args[0])
	}
}

func TestNormalizeArgs(t *testing.T) {
	var verified, edge optBool
	var rights listValue
	var name, path string
	c := &cobra.Command{Use: "x"}
	f := flagsOf(c)
	f.str(&name, "certificate-name", "n", "", "name")
	f.str(&path, "path", "p", "")
	f.optBool(&verified, "verified", "")
	f.optBool(&edge, "edge-enabled", "", "ee")
	f.list(&rights, "rights", "", "r")
	c.Flags().BoolP("help", "h", false, "")
	for name, tc := range map[string]struct{ in, want []string }{
		"ok/bare-last":           {[]string{"--verified"}, []string{"--verified=true"}},
		"ok/bare-before-flag":    {[]string{"--verified", "--path", "x"}, []string{"--verified=true", "--path", "x"}},
		"ok/value-kept":          {[]string{"--verified", "false", "-n", "a"}, []string{"--verified", "false", "-n", "a"}},
		"ok/alias-bare":          {[]string{"--ee", "-p", "f"}, []string{"--ee=true", "-p", "f"}},
		"ok/inline-value":        {[]string{"--verified=false"}, []string{"--verified=false"}},
		"ok/multi-words":         {[]string{"--rights", "EnrollmentRead", "EnrollmentWrite", "--path", "p"}, []string{"--rights=EnrollmentRead EnrollmentWrite", "--path", "p"}},
		"ok/flag-value-skipped":  {[]string{"--path", "--verified"}, []string{"--path", "--verified"}},
		"ok/short-value-skipped": {[]string{"-p", "--verified", "--verified"}, []string{"-p", "--verified", "--verified=true"}},
		"ok/after-dashdash":      {[]string{"--", "--verified"}, []string{"--", "--verified"}},
		"ok/help-no-value":       {[]string{"--help", "--verified"}, []string{"--help", "--verified=true"}},
		"ok/unknown-untouched":   {[]string{"--frob", "--verified"}, []string{"--frob", "--verified=true"}},
		"ok/short-multi":         {[]string{"-r", "A", "B", "-n", "x"}, []string{"-r=A B", "-n", "x"}},
		"ok/short-inline":        {[]string{"-n=x", "--verified"}, []string{"-n=x", "--verified=true"}},
	} {
		if got := normalizeArgs(c.Flags(), tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: normalizeArgs(%q) = %q, want %q", name, tc.in, got, tc.want)
		}
	}
}

func TestOptBool(t *testing.T) {
	var b optBool
	if b.set || b.String() != "" {
		t.Fatalf("zero optBool is set")
	}
	for in, want := range map[string]bool{"true": true, "False": false, "yes": true, "0": false} {
		b = optBool{}
		if err := b.Set(in); err != nil || !b.set || b.v != want {
			t.Errorf("Set(%q) = %v, %+v; want %v", in, err, b, want)
		}
	}
	if err := b.Set("maybe"); err == nil {
		t.Errorf("Set(maybe) succeeded")
	}
}

func TestMergeAttestation(t *testing.T) {
	rec := `{"registrationId":"a","attestation":{"type":"symmetricKey"},"etag":"\"x\""}`
	att := `{"type":"symmetricKey","symmetricKey":{"primaryKey":"k1","secondaryKey":"k2"}}`
	got, err := mergeAttestation(json.RawMessage(rec), json.RawMessage(att))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"registrationId":"a","attestation":` + att + `,"etag":"\"x\""}`
	if string(got) != want {
		t.Errorf("merged = %s\nwant %s", got, want)
	}
	if _, err := mergeAttestation(json.RawMessage(`[1]`), json.RawMessage(att)); err == nil {
		t.Errorf("merging into an array succeeded")
	}
}

func TestJSONObjectArg(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "tags.json")
	if err := os.WriteFile(file, []byte("{\n  \"a\": 1\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string]string{`{"a": 1}`: `{"a":1}`, file: `{"a":1}`} {
		got, err := jsonObjectArg("--tags", in)
		if err != nil || string(got) != want {
			t.Errorf("jsonObjectArg(%q) = %s, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{`{"a":`, `[1]`, `null`, filepath.Join(dir, "missing.json"), `"s"`} {
		_, err := jsonObjectArg("--tags", in)
		var ce *Error
		if !errors.As(err, &ce) || !strings.Contains(ce.Error(), "invalid JSON") || ce.Hint == "" {
			t.Errorf("jsonObjectArg(%q) = %v; want an invalid JSON error with a hint", in, err)
		}
	}
}
