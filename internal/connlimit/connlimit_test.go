package connlimit_test

import (
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/connlimit"
	"github.com/dpsd/dpsd/internal/testutil"
)

// server accepts on a limited listener and holds what it accepts until
// told to close it.
type server struct {
	ln       *connlimit.Listener
	accepted chan net.Conn
	mu       sync.Mutex
	refused  map[string]int
	open     int
}

func start(t *testing.T, limits connlimit.Limits) (*server, *testutil.LogBuffer) {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log, logs := testutil.NewLogger(t, slog.LevelDebug)
	s := &server{accepted: make(chan net.Conn, 100), refused: map[string]int{}}
	s.ln = connlimit.Wrap(raw, "test", limits, connlimit.Hooks{
		Refused: func(r string) { s.mu.Lock(); s.refused[r]++; s.mu.Unlock() },
		Open:    func(d int) { s.mu.Lock(); s.open += d; s.mu.Unlock() },
	}, log)
	t.Cleanup(func() { s.ln.Close() })
	go func() {
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			s.accepted <- c
		}
	}()
	return s, logs
}

// dial connects from the loopback address from and reports whether the
// server accepted the connection (it is handed to the server) or closed it
// (the client reads EOF).
func (s *server) dial(t *testing.T, from string) (client net.Conn, accepted net.Conn) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", s.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	closed := make(chan struct{})
	go func() {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		io.Copy(io.Discard, c)
		close(closed)
	}()
	select {
	case a := <-s.accepted:
		return c, a
	case <-closed:
		return c, nil
	case <-time.After(10 * time.Second):
		t.Fatal("the connection was neither accepted nor closed within 10 s")
	}
	return nil, nil
}

// TestCaps opens more connections than the caps allow, from several
// source addresses: the listener's cap and each source's are kept, and a
// closed connection gives its place back.
func TestCaps(t *testing.T) {
	s, logs := start(t, connlimit.Limits{Max: 6, PerSource: 4})
	var held []net.Conn
	want := func(from string, accepted bool) {
		t.Helper()
		_, a := s.dial(t, from)
		if (a != nil) != accepted {
			t.Fatalf("a connection from %s: accepted %v, want %v (open %d)", from, a != nil, accepted, s.ln.Open())
		}
		if a != nil {
			held = append(held, a)
		}
	}
	for range 4 {
		want("127.0.0.1", true)
	}
	for range 10 {
		want("127.0.0.1", false) // the source's cap
	}
	want("127.0.0.2", true)
	want("127.0.0.3", true)
	for _, from := range []string{"127.0.0.2", "127.0.0.4", "127.0.0.5"} {
		want(from, false) // the listener's cap
	}
	if s.ln.Open() != 6 {
		t.Fatalf("%d open, want 6", s.ln.Open())
	}
	// Closing one of 127.0.0.1's gives a place back to 127.0.0.1, or to
	// anyone: the listener is below its cap again.
	held[0].Close()
	held[0].Close() // twice: released once
	want("127.0.0.1", true)
	held[1].Close()
	want("127.0.0.4", true)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refused[connlimit.ReasonSource] != 10 || s.refused[connlimit.ReasonListener] != 3 || s.open != 6 {
		t.Fatalf("hooks: refused %v, open %d; want 10 source and 3 listener refusals, 6 open", s.refused, s.open)
	}
	// One log line for the burst, not one per refusal.
	if n := logs.Count("connection refused"); n != 1 || !strings.Contains(logs.String(), "cap=4") {
		t.Fatalf("%d log lines about refusals, want 1 naming the cap:\n%s", n, logs)
	}
}
