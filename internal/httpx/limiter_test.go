package httpx

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/dpserr"
)

func TestUnavailableLinesAreRateLimited(t *testing.T) {
	var l limiter
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	logged := 0
	for range 100 { // 100 refusals over 20 s
		if n, ok := l.allow(now); ok {
			logged++
			if logged > 1 && n == 0 {
				t.Fatal("a line after suppressed ones does not say how many")
			}
		}
		now = now.Add(200 * time.Millisecond)
	}
	if logged != 2 {
		t.Fatalf("%d lines at error level for 20 s of refusals, want 2", logged)
	}
}

func TestLogErrorLevels(t *testing.T) {
	unavailableLines = limiter{}
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	down := dpserr.Unavailable(errors.New("store unavailable"))
	for range 5 {
		LogError(log, context.Background(), down, "id")
	}
	LogError(log, context.Background(), dpserr.Internal(errors.New("bug")), "id")
	out := buf.String()
	if n := strings.Count(out, "level=ERROR"); n != 2 {
		t.Fatalf("%d error lines, want one 503 and the 500:\n%s", n, out)
	}
	if n := strings.Count(out, "level=DEBUG"); n != 4 {
		t.Fatalf("%d debug lines, want the 4 other 503s:\n%s", n, out)
	}
}
