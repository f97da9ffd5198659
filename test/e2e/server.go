package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/lockedfile"

	"github.com/dpsd/dpsd/internal/server"
	"github.com/dpsd/dpsd/internal/svcclient"
	"github.com/dpsd/dpsd/internal/testutil"
)

// Timeouts of the helpers.
const (
	startTimeout = 30 * time.Second
	stopTimeout  = 20 * time.Second
)

var (
	buildOnce sync.Once
	buildDir  string
	binPath   string
	buildErr  error
)

// Main builds the dpsd binary, runs the tests and removes the binary. Call
// it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(e2e.Main(m)) }
func Main(m *testing.M) int {
	if _, err := build(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building dpsd:", err)
		return 1
	}
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	return code
}

// Binary returns the path of the dpsd binary built for this test run.
func Binary(t testing.TB) string {
	t.Helper()
	p, err := build()
	if err != nil {
		t.Fatalf("building dpsd: %v", err)
	}
	return p
}

func build() (string, error) {
	buildOnce.Do(func() {
		root, err := ModuleRoot()
		if err != nil {
			buildErr = err
			return
		}
		goTool, err := exec.LookPath("go")
		if err != nil {
			buildErr = fmt.Errorf("the go command is not on PATH: %w", err)
			return
		}
		buildDir, err = os.MkdirTemp("", "dpsd-e2e-bin-")
		if err != nil {
			buildErr = err
			return
		}
		p := filepath.Join(buildDir, "dpsd")
		cmd := exec.Command(goTool, "build", "-o", p, "./cmd/dpsd")
		cmd.Dir = root
		// As shipped: a static binary without cgo (the TPM simulator of
		// the tests is cgo and must stay out of it).
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/dpsd: %v\n%s", err, out)
			return
		}
		binPath = p
	})
	return binPath, buildErr
}

// ModuleRoot returns the directory of the dpsd go.mod.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Server is a running `dpsd serve`.
type Server struct {
	Dir             string // data directory
	Bin             string // the dpsd binary
	IDScope         string
	DeviceEndpoint  string // host:port devices dial (localhost:PORT)
	ServiceEndpoint string // host:port of the service API
	MQTTEndpoint    string // host:port of MQTT over TLS ("" without MQTT)
	CAFile          string // the server CA clients must trust
	ConnString      string // owner policy's service connection string
	Port            int    // port of DeviceEndpoint
	Store           string // the --store given, if any

	t      testing.TB
	args   []string
	cmd    *exec.Cmd
	logs   *testutil.LogBuffer
	exited chan struct{} // closed when the process has exited
	err    error         // the process's exit status, after exited
	stop   sync.Once
}

// StartServer starts `dpsd serve --data DIR --https-addr 127.0.0.1:0
// extraArgs...` in a new t.TempDir() (extraArgs come last, so they override)
// and returns once it listens. The server is stopped at the end of the test,
// which fails unless dpsd exits 0 on SIGTERM.
func StartServer(t testing.TB, extraArgs ...string) *Server {
	t.Helper()
	return StartServerIn(t, t.TempDir(), extraArgs...)
}

// StartServerIn is StartServer on an existing data directory (a restart).
func StartServerIn(t testing.TB, dir string, extraArgs ...string) *Server {
	t.Helper()
	s := launch(t, dir, extraArgs)
	s.await(t)
	return s
}

// StartServers starts n servers at once, each in a new t.TempDir(), with the
// same extraArgs, and returns once all listen: the nodes of one deployment
// starting together on one --store.
func StartServers(t testing.TB, n int, extraArgs ...string) []*Server {
	t.Helper()
	ss := make([]*Server, n)
	for i := range ss {
		ss[i] = launch(t, t.TempDir(), extraArgs)
	}
	for _, s := range ss {
		s.await(t)
	}
	return ss
}

// launch starts `dpsd serve` in dir without waiting for it.
func launch(t testing.TB, dir string, extraArgs []string) *Server {
	t.Helper()
	s := &Server{Dir: dir, Bin: Binary(t), t: t, logs: &testutil.LogBuffer{}, exited: make(chan struct{})}
	for i, a := range extraArgs {
		if a == "--store" && i+1 < len(extraArgs) {
			s.Store = extraArgs[i+1]
		} else if v, ok := strings.CutPrefix(a, "--store="); ok {
			s.Store = v
		}
	}
	// A server.json left by an earlier run in dir must not be mistaken for
	// this one's.
	os.Remove(filepath.Join(dir, server.StateFile))
	args := []string{"serve", "--data", dir, "--https-addr", "127.0.0.1:0"}
	// Every listener on a free port, so that servers run side by side.
	if serveFlags(t, s.Bin)["--mqtt-addr"] {
		args = append(args, "--mqtt-addr", "127.0.0.1:0")
	}
	args = append(args, extraArgs...)
	s.cmd = exec.Command(s.Bin, args...)
	s.cmd.Stdout = s.logs
	s.cmd.Stderr = s.logs
	s.cmd.Env = append(os.Environ(), "DPSD_LOG_LEVEL=debug")
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("starting dpsd: %v", err)
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(s.Stop)
	s.args = args
	return s
}

// await waits until s listens and reads its connection details.
func (s *Server) await(t testing.TB) {
	t.Helper()
	dir, args := s.Dir, s.args
	deadline := time.Now().Add(startTimeout)
	for {
		st, err := server.ReadState(dir)
		if err == nil && st.PID == s.cmd.Process.Pid {
			s.MQTTEndpoint = st.MQTTEndpoint
			break
		}
		select {
		case <-s.exited:
			t.Fatalf("dpsd %s exited before listening (%v); its log:\n%s", strings.Join(args, " "), s.err, s.Logs())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("dpsd did not write %s within %s; its log:\n%s", server.StateFile, startTimeout, s.Logs())
		}
	}

	infoArgs := []string{"info", "--data", dir, "-o", "json"}
	if s.Store != "" {
		infoArgs = append(infoArgs, "--store", s.Store)
	}
	out, err := exec.Command(s.Bin, infoArgs...).CombinedOutput()
	if err != nil {
		t.Fatalf("dpsd info: %v\n%s", err, out)
	}
	var info struct {
		IDScope                 string `json:"idScope"`
		DeviceEndpoint          string `json:"deviceEndpoint"`
		ServiceEndpoint         string `json:"serviceEndpoint"`
		ServiceConnectionString string `json:"serviceConnectionString"`
		ServerCAFile            string `json:"serverCAFile"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatalf("dpsd info -o json: %v\n%s", err, out)
	}
	s.IDScope, s.DeviceEndpoint, s.ServiceEndpoint = info.IDScope, info.DeviceEndpoint, info.ServiceEndpoint
	s.ConnString, s.CAFile = info.ServiceConnectionString, info.ServerCAFile
	_, port, err := net.SplitHostPort(s.DeviceEndpoint)
	if err != nil {
		t.Fatalf("device endpoint %q: %v", s.DeviceEndpoint, err)
	}
	if s.Port, err = strconv.Atoi(port); err != nil {
		t.Fatalf("device endpoint %q: %v", s.DeviceEndpoint, err)
	}
	for name, v := range map[string]string{"idScope": s.IDScope, "serviceConnectionString": s.ConnString, "serverCAFile": s.CAFile} {
		if v == "" {
			t.Fatalf("dpsd info printed no %s:\n%s", name, out)
		}
	}
}

// Kill ends dpsd with SIGKILL, as a crash or a lost machine would, and
// waits for it to exit. The test does not fail for it, and Stop does
// nothing afterwards.
func (s *Server) Kill() {
	s.stop.Do(func() {
		s.cmd.Process.Kill()
		<-s.exited
	})
}

// Stop sends SIGTERM and waits for dpsd to exit; the test fails unless it
// exits 0 within 20 s (it is killed then). Stop may be called more than once.
func (s *Server) Stop() {
	s.stop.Do(func() {
		select {
		case <-s.exited:
			s.t.Errorf("dpsd had already exited (%v); its log:\n%s", s.err, s.Logs())
			return
		default:
		}
		if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			s.t.Errorf("SIGTERM to dpsd: %v", err)
		}
		select {
		case <-s.exited:
		case <-time.After(stopTimeout):
			s.cmd.Process.Kill()
			<-s.exited
			s.t.Errorf("dpsd did not stop within %s of SIGTERM; its log:\n%s", stopTimeout, s.Logs())
			return
		}
		if s.err != nil {
			s.t.Errorf("dpsd exited with %v after SIGTERM (want 0); its log:\n%s", s.err, s.Logs())
		}
	})
}

var (
	flagsOnce sync.Once
	flags     map[string]bool
)

// serveFlags returns the flags `dpsd serve` knows, from its help text.
func serveFlags(t testing.TB, bin string) map[string]bool {
	t.Helper()
	flagsOnce.Do(func() {
		flags = map[string]bool{}
		out, _ := exec.Command(bin, "serve", "--help").CombinedOutput()
		for _, f := range strings.Fields(string(out)) {
			if strings.HasPrefix(f, "--") {
				flags[strings.TrimRight(f, ",")] = true
			}
		}
	})
	if !flags["--https-addr"] {
		t.Fatalf("dpsd serve --help does not list --https-addr")
	}
	return flags
}

// Logs returns what dpsd wrote to stdout and stderr so far.
func (s *Server) Logs() string { return s.logs.String() }

// Exited reports whether the process has ended.
func (s *Server) Exited() bool {
	select {
	case <-s.exited:
		return true
	default:
		return false
	}
}

// Client returns the Go service API client, logged in as the owner policy.
func (s *Server) Client(t testing.TB) *svcclient.Client {
	t.Helper()
	ca, err := os.ReadFile(s.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	c, err := svcclient.New(s.ConnString, ca)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// NodeEnv is the environment the scripts of test/node read: the service
// connection string, the CA to trust, the ID scope and the device endpoint.
func (s *Server) NodeEnv() map[string]string {
	return map[string]string{
		"DPS_CONNECTION_STRING": s.ConnString,
		"NODE_EXTRA_CA_CERTS":   s.CAFile,
		"DPS_ID_SCOPE":          s.IDScope,
		"DPS_PROVISIONING_HOST": s.DeviceEndpoint,
	}
}

// Port443 is the address StartServer443 listens on.
const Port443 = "127.0.0.1:443"

// StartServer443 is StartServer listening on 127.0.0.1:443, for clients
// that can only dial the default HTTPS port (the Azure Node SDK's HTTP
// transports). Users of port 443 are serialized across tests and test
// processes by a lock file; the lock is released after the server stopped.
func StartServer443(t testing.TB, extraArgs ...string) *Server {
	t.Helper()
	Listen443(t).Close() // the lock, held until after the server's Stop
	return StartServer(t, append([]string{"--https-addr", Port443}, extraArgs...)...)
}

// Listen443 takes the port-443 lock until the end of the test and listens
// on Port443, for a test that serves clients of that port itself. Close
// the listener (or the server on it) in a cleanup registered after this
// call, so that it runs before the lock is released.
func Listen443(t testing.TB) net.Listener {
	t.Helper()
	lock := filepath.Join(os.TempDir(), "dpsd-e2e-port443.lock")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	unlock, err := lockWithContext(ctx, lock)
	if err != nil {
		t.Fatalf("waiting for %s (another test holds port 443): %v", lock, err)
	}
	t.Cleanup(unlock)
	l, err := net.Listen("tcp", Port443)
	if err != nil {
		if errors.Is(err, syscall.EACCES) {
			t.Fatalf("cannot listen on %s: %v; run the tests as root or give the test binary CAP_NET_BIND_SERVICE (CI runs as root)", Port443, err)
		}
		t.Fatalf("cannot listen on %s: %v; another program is using the port", Port443, err)
	}
	return l
}

func lockWithContext(ctx context.Context, path string) (func(), error) {
	type result struct {
		unlock func()
		err    error
	}
	ch := make(chan result, 1)
	go func() {
		u, err := lockedfile.MutexAt(path).Lock()
		ch <- result{u, err}
	}()
	select {
	case r := <-ch:
		return r.unlock, r.err
	case <-ctx.Done():
		// The goroutine still holds or will get the lock; release it
		// when it does.
		go func() {
			if r := <-ch; r.err == nil {
				r.unlock()
			}
		}()
		return nil, ctx.Err()
	}
}
