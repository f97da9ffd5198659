// Package testutil is the support every test suite of dpsd shares: a log
// buffer that a failed test prints, certificate fixtures, racing and paging
// helpers. It imports no store implementation and no server, so that their
// own tests can use it too (the in-process server is
// internal/server/servertest). Only tests import it.
package testutil

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/dpsd/dpsd/internal/store"
)

// maxLog bounds a LogBuffer: a fuzz target logs without end.
const maxLog = 64 << 20

// LogBuffer collects a log for assertions and for the output of a failed
// test. It is safe for concurrent use; past 64 MiB it drops the oldest half.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len()+len(p) > maxLog {
		keep := b.buf.Bytes()[b.buf.Len()/2:]
		b.buf = *bytes.NewBuffer(append([]byte(nil), keep...))
	}
	return b.buf.Write(p)
}

// String returns the log.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Count returns how many times substr occurs in the log.
func (b *LogBuffer) Count(substr string) int { return strings.Count(b.String(), substr) }

// Tail returns the last n bytes of the log.
func (b *LogBuffer) Tail(n int) string {
	s := b.String()
	if len(s) > n {
		s = "...\n" + s[len(s)-n:]
	}
	return s
}

// NewLogger returns a text logger at level that writes into a new
// LogBuffer, whose last 30,000 bytes are printed if t has failed when it
// ends: in cleanups registered later (a server's shutdown) the log is still
// complete.
func NewLogger(t testing.TB, level slog.Level) (*slog.Logger, *LogBuffer) {
	t.Helper()
	logs := &LogBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", logs.Tail(30000))
		}
	})
	return slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: level})), logs
}

// WriteFile writes data into a file name in dir, 0600, and returns its
// path.
func WriteFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// ReadFile returns the content of a file.
func ReadFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Together calls f(0) to f(n-1), each in its own goroutine, releasing them
// at the same moment so that the calls overlap as much as they can, and
// returns when all have returned: the shape of every race a test provokes.
func Together(n int, f func(i int)) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			f(i)
		})
	}
	close(start)
	wg.Wait()
}

// Spread calls f(i) for every i below n on workers goroutines, and returns
// when all calls have returned: a steady load rather than a burst.
func Spread(n, workers int, f func(i int)) {
	var wg sync.WaitGroup
	next := make(chan int)
	for range workers {
		wg.Go(func() {
			for i := range next {
				f(i)
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

// JSON returns v encoded as JSON.
func JSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// All reads every page of a keyset-paginated store list.
func All[T any](t testing.TB, list func(ctx context.Context, after string, limit int) (store.Page[T], error)) []T {
	t.Helper()
	var all []T
	for after := ""; ; {
		p, err := list(context.Background(), after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, p.Items...)
		if after = p.Next; after == "" {
			return all
		}
	}
}

// WantError fails t unless err is nil when want is "", or else an error
// whose message contains want. It reports whether an error was wanted.
func WantError(t testing.TB, err error, want string) bool {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatal(err)
	case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
		t.Fatalf("err = %v, want one containing %q", err, want)
	}
	return want != ""
}
