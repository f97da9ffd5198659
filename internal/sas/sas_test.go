package sas

import (
	"encoding/base64"
	"net/url"
	"strings"
	"testing"
	"time"
)

// The SAS test vectors of docs/protocol.md, computed independently of dpsd.
func TestDeviceVectors(t *testing.T) {
	group, _ := base64.StdEncoding.DecodeString("8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==")
	const regID = "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"
	dev := DeriveDeviceKey(group, regID)
	if got := base64.StdEncoding.EncodeToString(dev); got != "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=" {
		t.Fatalf("derived key = %s", got)
	}
	for _, tc := range []struct{ sr, sig string }{
		{"0ne00111111%2fregistrations%2f" + regID, "LwAx%2BRfQDq37RAHvptYP8R3382xvZ%2FBntAGlh8Wmu18%3D"},
		{"0ne00111111%2Fregistrations%2F" + regID, "2srIk05%2FHc3kiyY2AcAwJosiRYk6C6jOscAYhKLO2L8%3D"},
		{"0ne00111111/registrations/" + regID, "%2F%2Beah6KDNGyh0EVauDWy8TsgRl239ASFozi9g%2BrShXg%3D"},
	} {
		// Field order as the docs show it, and no skn (Python).
		tok, err := Parse("SharedAccessSignature sig=" + tc.sig + "&se=1700000000&sr=" + tc.sr)
		if err != nil {
			t.Fatal(err)
		}
		if !tok.Verify(dev) {
			t.Errorf("sr=%s: signature does not verify", tc.sr)
		}
		if tok.Verify(group) {
			t.Errorf("sr=%s: group key verified a device signature", tc.sr)
		}
		if !tok.MatchesDevice("0NE00111111", strings.ToUpper(regID)) {
			t.Errorf("sr=%s: resource does not match", tc.sr)
		}
		if tok.MatchesDevice("0ne00111111", "other") {
			t.Errorf("sr=%s: matched another device", tc.sr)
		}
	}
}

func TestServiceVector(t *testing.T) {
	key, _ := base64.StdEncoding.DecodeString("dGVzdFN0cmluZzE=")
	tok, err := Parse("SharedAccessSignature sr=mydps.azure-devices-provisioning.net&sig=B%2B52UIZrOfnttB8z7DOG24mG8cBQoF3EtdNWkGWofjQ%3D&se=1700000000&skn=provisioningserviceowner")
	if err != nil {
		t.Fatal(err)
	}
	if !tok.Verify(key) || tok.KeyName != "provisioningserviceowner" {
		t.Fatalf("service vector: verify=%v skn=%q", tok.Verify(key), tok.KeyName)
	}
	if !tok.Expired(time.Unix(1700000000, 0)) || tok.Expired(time.Unix(1699999999, 0)) {
		t.Fatal("expiry boundary wrong")
	}
}

func TestNewRoundTrip(t *testing.T) {
	key := []byte("0123456789abcdef")
	exp := time.Now().Add(time.Hour)
	for _, enc := range []bool{true, false} {
		tok, err := Parse(New("0ne00000001/registrations/dev-1", "registration", key, exp, enc))
		if err != nil {
			t.Fatal(err)
		}
		if !tok.Verify(key) || tok.KeyName != "registration" || !tok.MatchesDevice("0ne00000001", "dev-1") {
			t.Fatalf("encode=%v: round trip failed: %+v", enc, tok)
		}
		if enc && !strings.Contains(tok.RawResource, "%2f") {
			t.Fatalf("encoded resource %q", tok.RawResource)
		}
	}
}

// TestNewKey checks that generated keys decode to the asked length and differ.
func TestNewKey(t *testing.T) {
	for _, n := range []int{16, 32, 64} {
		a, b := NewKey(n), NewKey(n)
		for _, k := range []string{a, b} {
			raw, err := DecodeKey(k)
			if err != nil || len(raw) != n {
				t.Fatalf("NewKey(%d) = %q: decodes to %d bytes, %v", n, k, len(raw), err)
			}
		}
		if a == b {
			t.Fatalf("NewKey(%d) returned %q twice", n, a)
		}
	}
}

// TestCheckService: a service token must name one of the instance's host
// names, in any case, with or without scheme and port, and a prefix of the
// path by whole segments.
func TestCheckService(t *testing.T) {
	ours := func(h string) bool { return h == "localhost" || h == "::1" || h == "dps.example.com" }
	cases := []struct {
		sr, path string
		reason   string // "" when covered
	}{
		{"localhost:8443", "/enrollments/x", ""},
		{"localhost", "/enrollments/x", ""},
		{"LOCALHOST:8443", "/x", ""},
		{"localhost:9999", "/x", ""}, // the port is not checked: a load balancer may change it
		{"DPS.Example.com", "/x", ""},
		{"otherhost", "/x", `the SAS token is for "otherhost", which is not a host name of this dpsd instance`},
		{"evil.example:8443", "/x", "not a host name of this dpsd instance"},
		{"localhost.evil.example", "/x", "not a host name"},
		{"", "/x", "not a host name"},
		{"localhost:8443/enrollments", "/enrollments/x", ""},
		{"localhost:8443/enrollments", "/enrollments", ""},
		{"localhost:8443/enrollments", "/enrollmentGroups/x", `the SAS token is for resource "localhost:8443/enrollments", which does not cover /enrollmentGroups/x`},
		{"https://localhost:8443/", "/enrollments", ""},
		{"[::1]:8443", "/x", ""},
		{"[::1]", "/x", ""},
	}
	for _, c := range cases {
		err := (&Token{Resource: c.sr}).CheckService(ours, c.path)
		switch {
		case c.reason == "" && err != nil:
			t.Errorf("sr=%q path=%q: %v", c.sr, c.path, err)
		case c.reason != "" && (err == nil || !strings.Contains(err.Error(), c.reason)):
			t.Errorf("sr=%q path=%q: %v, want %q", c.sr, c.path, err, c.reason)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for name, s := range map[string]string{
		"no prefix":      "sr=a&sig=b&se=1",
		"no sr":          "SharedAccessSignature sig=YQ==&se=1",
		"no sig":         "SharedAccessSignature sr=a&se=1",
		"no se":          "SharedAccessSignature sr=a&sig=YQ==",
		"bad se":         "SharedAccessSignature sr=a&sig=YQ==&se=tomorrow",
		"negative se":    "SharedAccessSignature sr=a&sig=YQ==&se=-5",
		"se after 9999":  "SharedAccessSignature sr=a&sig=YQ==&se=253402300800",
		"se max int64":   "SharedAccessSignature sr=a&sig=YQ==&se=9223372036854775807",
		"bad sig":        "SharedAccessSignature sr=a&sig=%%%&se=1",
		"sig not base64": "SharedAccessSignature sr=a&sig=!!!!&se=1",
		"field no =":     "SharedAccessSignature sr=a&sig=YQ==&se=1&junk",
		"too long":       "SharedAccessSignature sr=" + strings.Repeat("a", MaxTokenLength),
	} {
		if _, err := Parse(s); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestCheckExpiry: an expired token and, with a maximum lifetime, one valid
// for longer are refused with what is wrong; the last second of the year
// 9999 is the latest expiry read, and compares as the future.
func TestCheckExpiry(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name   string
		se     int64
		max    time.Duration
		reason string // "" when usable
	}{
		{"one second left", now.Unix() + 1, 0, ""},
		{"expires now", now.Unix(), 0, "the SAS token expired at 2030-01-02T03:04:05Z (server time 2030-01-02T03:04:05Z)"},
		{"year 9999 without a limit", maxExpiry, 0, ""},
		{"year 9999 with a limit", maxExpiry, time.Hour, "the SAS token is valid until 9999-12-31T23:59:59Z, longer than the 1h0m0s this server accepts"},
		{"exactly the limit", now.Unix() + 3600, time.Hour, ""},
		{"a second over the limit", now.Unix() + 3601, time.Hour, "longer than the 1h0m0s this server accepts (server time 2030-01-02T03:04:05Z); sign tokens that expire sooner"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := Parse(New("h", "", []byte("k"), time.Unix(tc.se, 0), false))
			if err != nil {
				t.Fatal(err)
			}
			err = tok.CheckExpiry(now, tc.max)
			switch {
			case tc.reason == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.reason != "" && (err == nil || !strings.Contains(err.Error(), tc.reason)):
				t.Fatalf("got %v, want %q", err, tc.reason)
			}
		})
	}
	_, err := Parse("SharedAccessSignature sr=a&sig=YQ==&se=9223372036854775807")
	if err == nil || !strings.Contains(err.Error(), "se 9223372036854775807 is after the year 9999") {
		t.Errorf("se = max int64: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add("SharedAccessSignature sr=0ne00111111%2fregistrations%2fdev&sig=LwAx%2BRfQ%3D&se=1700000000&skn=registration")
	f.Add("SharedAccessSignature sig=abc&se=1&sr=" + url.QueryEscape("a/b"))
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := Parse(s)
		if err != nil {
			return
		}
		_ = tok.Verify([]byte("k"))
		_ = tok.MatchesDevice("0ne00000000", "x")
		_ = tok.CheckService(func(h string) bool { return h == "h" }, "/p")
	})
}

func FuzzParseConnectionString(f *testing.F) {
	f.Add("HostName=hub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=aGVsbG8=")
	f.Add("HostName=;;=;SharedAccessKey=****")
	f.Fuzz(func(t *testing.T, s string) {
		cs, err := ParseConnectionString(s)
		if err != nil {
			return
		}
		if cs.HostName == "" {
			t.Fatalf("accepted %q without a HostName", s)
		}
		if cs.SharedAccessKey != "" && !strings.HasSuffix(cs.Masked(), ";SharedAccessKey=****") {
			t.Fatalf("Masked() %q does not hide the key", cs.Masked())
		}
		back, err := ParseConnectionString(cs.String())
		if err != nil || *back != *cs {
			t.Fatalf("String() %q does not parse back to %+v: %+v, %v", cs.String(), cs, back, err)
		}
	})
}
