package hub

import (
	"strings"
	"testing"
	"time"
)

func TestQuoteAnswerMasksKeysAndCuts(t *testing.T) {
	key := "c2VjcmV0LWtleS0xMjM0NTY="
	got := quoteAnswer([]byte(`  {"echo":{"primaryKey":"`+key+`"},"short":"abc"}  `), []string{key, "abc", ""})
	if want := `{"echo":{"primaryKey":"****"},"short":"abc"}`; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	long := quoteAnswer([]byte(strings.Repeat("é", MaxAnswerLength)), nil)
	if len(long) > MaxAnswerLength+3 || !strings.HasSuffix(long, "...") || !strings.HasPrefix(long, "éé") {
		t.Fatalf("long answer cut to %d bytes: %q...", len(long), long[:10])
	}
	if got := quoteAnswer(nil, nil); got != "(empty body)" {
		t.Fatalf("empty: %q", got)
	}
}

func TestRetryWait(t *testing.T) {
	r := Retry{Base: 100 * time.Millisecond, Max: time.Second}.withDefaults()
	for n, max := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 60: time.Second} {
		for range 50 {
			if d := r.wait(n, ""); d < max/2 || d > max {
				t.Fatalf("wait(%d) = %v, want within [%v, %v]", n, d, max/2, max)
			}
		}
	}
	if d := r.wait(1, "0"); d != 0 {
		t.Fatalf("Retry-After 0: %v", d)
	}
	if d := r.wait(1, "120"); d != time.Second {
		t.Fatalf("Retry-After 120 capped at Max: %v", d)
	}
	if d := r.wait(1, "soon"); d < 50*time.Millisecond || d > 100*time.Millisecond {
		t.Fatalf("unreadable Retry-After ignored: %v", d)
	}
	if def := (Retry{}).withDefaults(); def.Attempts != 4 || def.Base != 200*time.Millisecond || def.Max != 5*time.Second {
		t.Fatalf("defaults %+v", def)
	}
}
