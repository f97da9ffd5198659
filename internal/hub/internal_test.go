package hub

import (
	"encoding/json"
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

func TestParseTwinAnswer(t *testing.T) {
	tests := map[string]struct {
		body, want, wantErr string
	}{
		"full": {body: `{"deviceId":"d","tags":{"a":1},"properties":{"desired":{"x":{"y":2},"$metadata":{"$lastUpdated":"t"},"$version":3},"reported":{"r":1}}}`,
			want: `{"tags":{"a":1},"properties":{"desired":{"x":{"y":2}}}}`},
		"metadata only":       {body: `{"properties":{"desired":{"$metadata":{},"$version":1}}}`, want: `null`},
		"nothing":             {body: `{"deviceId":"d"}`, want: `null`},
		"empty tags":          {body: `{"tags":{},"properties":{"desired":{"k":"v","$version":2}}}`, want: `{"properties":{"desired":{"k":"v"}}}`},
		"fail/not JSON":       {body: `<html>`, wantErr: "not valid JSON"},
		"fail/tags string":    {body: `{"tags":"x"}`, wantErr: "tags are not a JSON object"},
		"fail/desired number": {body: `{"properties":{"desired":7}}`, wantErr: "desired properties are not a JSON object"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := parseTwinAnswer([]byte(tc.body))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			b, _ := json.Marshal(got)
			if err != nil || string(b) != tc.want {
				t.Fatalf("got %s, %v; want %s", b, err, tc.want)
			}
		})
	}
}

func FuzzParseTwinAnswer(f *testing.F) {
	f.Add([]byte(`{"tags":{"a":1},"properties":{"desired":{"x":1,"$version":2}}}`))
	f.Add([]byte(`{"properties":{"desired":{"$metadata":{}}}}`))
	f.Add([]byte(`{"tags":null,"properties":null}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		tw, err := parseTwinAnswer(body)
		if err != nil || tw == nil {
			return
		}
		if tw.Tags != nil && (!json.Valid(tw.Tags) || !isObject(tw.Tags)) {
			t.Fatalf("tags %q", tw.Tags)
		}
		if p := tw.Properties; p != nil {
			var m map[string]json.RawMessage
			if json.Unmarshal(p.Desired, &m) != nil || len(m) == 0 {
				t.Fatalf("desired %q", p.Desired)
			}
			for k := range m {
				if strings.HasPrefix(k, "$") {
					t.Fatalf("desired keeps %q", k)
				}
			}
		}
	})
}

func FuzzVerifySignature(f *testing.F) {
	f.Add([]byte("body"), Sign([]byte("k"), []byte("body")))
	f.Add([]byte(""), "sha256=")
	f.Fuzz(func(t *testing.T, body []byte, header string) {
		if VerifySignature([]byte("k"), body, header) && header != Sign([]byte("k"), body) && !strings.EqualFold(header, Sign([]byte("k"), body)) {
			t.Fatalf("%q verifies for %q", header, body)
		}
	})
}
