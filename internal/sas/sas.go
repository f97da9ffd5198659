// Package sas parses, signs and verifies the shared access signature tokens of
// DPS: device tokens (symmetric-key attestation) and service tokens (the
// service API), and derives per-device keys from group keys.
//
// A token is "SharedAccessSignature sr=..&sig=..&se=..[&skn=..]". The HMAC is
// computed over sr exactly as sent, because clients disagree on how to encode
// it (raw, %2f, %2F) and each signs its own form.
package sas

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
)

// Prefix starts every token.
const Prefix = "SharedAccessSignature "

// MaxTokenLength bounds what Parse reads; real tokens are a few hundred bytes.
const MaxTokenLength = 4096

// Token is a parsed SAS token.
type Token struct {
	RawResource string    // sr as sent; the signed string
	Resource    string    // sr percent-decoded
	Signature   []byte    // sig decoded
	RawExpiry   string    // se as sent; the signed string
	Expiry      time.Time // se as a time
	KeyName     string    // skn decoded; may be empty
}

// Parse reads a token. Field order does not matter; unknown fields are
// ignored; sr, sig and se are required.
func Parse(s string) (*Token, error) {
	if len(s) > MaxTokenLength {
		return nil, fmt.Errorf("SAS token is longer than %d bytes", MaxTokenLength)
	}
	rest, ok := cutPrefixFold(strings.TrimSpace(s), Prefix)
	if !ok {
		return nil, errors.New(`token does not start with "SharedAccessSignature "`)
	}
	var t Token
	var haveSR, haveSig, haveSE bool
	for _, field := range strings.Split(strings.TrimSpace(rest), "&") {
		k, v, ok := strings.Cut(field, "=")
		if !ok {
			return nil, fmt.Errorf("SAS token field %q has no '='", dps.Truncate(field))
		}
		switch strings.ToLower(k) {
		case "sr":
			dec, err := url.PathUnescape(v)
			if err != nil {
				return nil, fmt.Errorf("SAS token sr is not valid percent-encoding: %v", err)
			}
			t.RawResource, t.Resource, haveSR = v, dec, true
		case "sig":
			dec, err := url.PathUnescape(v)
			if err != nil {
				return nil, fmt.Errorf("SAS token sig is not valid percent-encoding: %v", err)
			}
			sig, err := decodeBase64(dec)
			if err != nil {
				return nil, errors.New("SAS token sig is not base64")
			}
			t.Signature, haveSig = sig, true
		case "se":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return nil, fmt.Errorf("SAS token se %q is not a Unix time in seconds", dps.Truncate(v))
			}
			// time.Time cannot compare instants this far out (they wrap),
			// and no clock reaches them: a token of the year 10000 or later
			// is refused for what it is, not as expired.
			if n > maxExpiry {
				return nil, fmt.Errorf("SAS token se %s is after the year 9999; se is the expiry in seconds since 1970 (e.g. now + 3600)", dps.Truncate(v))
			}
			t.RawExpiry, t.Expiry, haveSE = v, time.Unix(n, 0).UTC(), true
		case "skn":
			dec, err := url.QueryUnescape(v)
			if err != nil {
				return nil, fmt.Errorf("SAS token skn is not valid percent-encoding: %v", err)
			}
			t.KeyName = dec
		}
	}
	switch {
	case !haveSR:
		return nil, errors.New("SAS token has no sr (resource)")
	case !haveSig:
		return nil, errors.New("SAS token has no sig (signature)")
	case !haveSE:
		return nil, errors.New("SAS token has no se (expiry)")
	}
	return &t, nil
}

// Sign returns HMAC-SHA256(key, sr + "\n" + se).
func Sign(key []byte, rawResource, rawExpiry string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(rawResource))
	m.Write([]byte{'\n'})
	m.Write([]byte(rawExpiry))
	return m.Sum(nil)
}

// Verify reports whether the token was signed with key. The comparison takes
// constant time.
func (t *Token) Verify(key []byte) bool {
	return hmac.Equal(Sign(key, t.RawResource, t.RawExpiry), t.Signature)
}

// maxExpiry is the last second of the year 9999, the latest se Parse reads.
const maxExpiry = 253402300799

// Expired reports whether the token's expiry is not after now.
func (t *Token) Expired(now time.Time) bool { return !t.Expiry.After(now) }

// CheckExpiry says why the token cannot be used at now: it expired, or,
// when maxLifetime is positive, it stays valid longer than maxLifetime
// from now. The message is fit for the caller; the token is not in it.
func (t *Token) CheckExpiry(now time.Time, maxLifetime time.Duration) error {
	const layout = "2006-01-02T15:04:05Z"
	if t.Expired(now) {
		return fmt.Errorf("the SAS token expired at %s (server time %s)", t.Expiry.Format(layout), now.UTC().Format(layout))
	}
	if maxLifetime > 0 && t.Expiry.Sub(now) > maxLifetime {
		return fmt.Errorf("the SAS token is valid until %s, longer than the %s this server accepts (server time %s); sign tokens that expire sooner", t.Expiry.Format(layout), maxLifetime, now.UTC().Format(layout))
	}
	return nil
}

// New builds a token for resource, valid until expiry. With encodeResource the
// resource is percent-encoded (lower-case, as the C and C# SDKs do); without,
// it is sent raw (as the Node SDKs do). keyName may be empty.
func New(resource, keyName string, key []byte, expiry time.Time, encodeResource bool) string {
	sr := resource
	if encodeResource {
		sr = strings.ToLower(url.QueryEscape(resource))
	}
	se := strconv.FormatInt(expiry.Unix(), 10)
	sig := url.QueryEscape(base64.StdEncoding.EncodeToString(Sign(key, sr, se)))
	tok := Prefix + "sr=" + sr + "&sig=" + sig + "&se=" + se
	if keyName != "" {
		tok += "&skn=" + url.QueryEscape(keyName)
	}
	return tok
}

// DeriveDeviceKey returns the key of one device of a symmetric-key group:
// HMAC-SHA256(groupKey, registrationID).
func DeriveDeviceKey(groupKey []byte, registrationID string) []byte {
	m := hmac.New(sha256.New, groupKey)
	m.Write([]byte(registrationID))
	return m.Sum(nil)
}

// NewKey returns n random bytes, base64 encoded: every key dpsd generates
// (enrollment and group keys, policy keys) comes from here.
func NewKey(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never returns an error
	return base64.StdEncoding.EncodeToString(b)
}

// DecodeKey decodes a base64 symmetric key.
func DecodeKey(s string) ([]byte, error) { return decodeBase64(s) }

// DeviceResource is the resource a device token must name.
func DeviceResource(idScope, registrationID string) string {
	return idScope + "/registrations/" + registrationID
}

// MatchesDevice reports whether the decoded resource is
// {idScope}/registrations/{registrationID}, ignoring case.
func (t *Token) MatchesDevice(idScope, registrationID string) bool {
	return strings.EqualFold(t.Resource, DeviceResource(idScope, registrationID))
}

// CheckService says why the token does not cover a request to path of
// this instance: its resource must name one of the instance's host names
// (ours is asked about the host in lower case, without scheme and port:
// a port is not checked, a load balancer may change it) and a prefix of
// path by whole segments: a token for "host/enrollments" covers
// "/enrollments/x" but not "/enrollmentGroups". The request's Host header
// plays no part: a client chooses it, so it cannot say whom a token is for.
func (t *Token) CheckService(ours func(host string) bool, path string) error {
	r := strings.ToLower(t.Resource)
	r = strings.TrimPrefix(strings.TrimPrefix(r, "https://"), "http://")
	rHost, rPath, _ := strings.Cut(r, "/")
	if h, _, err := net.SplitHostPort(rHost); err == nil {
		rHost = h
	}
	rHost = strings.TrimSuffix(strings.TrimPrefix(rHost, "["), "]")
	if rHost == "" || !ours(rHost) {
		return fmt.Errorf("the SAS token is for %q, which is not a host name of this dpsd instance: sign it for the HostName of the instance's service connection string (a --hostname, or a name of its server certificate)", dps.Truncate(t.Resource))
	}
	rPath = strings.Trim(rPath, "/")
	if rPath == "" {
		return nil
	}
	p := strings.Trim(strings.ToLower(path), "/")
	if p == rPath || strings.HasPrefix(p, rPath+"/") {
		return nil
	}
	return fmt.Errorf("the SAS token is for resource %q, which does not cover %s", dps.Truncate(t.Resource), dps.Truncate(path))
}

func decodeBase64(s string) ([]byte, error) {
	if b, err := base64.StdEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	return base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}
