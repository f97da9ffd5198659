// Package svcclient is a Go client of the dpsd service API, authenticated
// with a shared access policy as Azure's service SDKs are. The CLI's
// management commands and the end-to-end tests use it.
package svcclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/sas"
)

// APIVersion is sent on every request (dpsd accepts any).
const APIVersion = "2021-10-01"

// Client calls one dpsd (or Azure DPS) service endpoint.
type Client struct {
	base    string // https://host[:port]
	host    string // HostName, as the token's sr
	keyName string
	key     []byte
	http    *http.Client
	// Now is the clock for token expiry (tests).
	Now func() time.Time
}

// New returns a client for the connection string, trusting the CA
// certificates in caPEM (nil: the system roots).
func New(connectionString string, caPEM []byte) (*Client, error) {
	return newClient(connectionString, caPEM, false)
}

// NewWithSystemRoots trusts the system roots and the certificates in caPEM.
func NewWithSystemRoots(connectionString string, caPEM []byte) (*Client, error) {
	return newClient(connectionString, caPEM, true)
}

func newClient(connectionString string, caPEM []byte, systemRoots bool) (*Client, error) {
	cs, err := sas.ParseConnectionString(connectionString)
	if err != nil {
		return nil, err
	}
	if cs.SharedAccessKeyName == "" || cs.SharedAccessKey == "" {
		return nil, errors.New("the connection string needs SharedAccessKeyName and SharedAccessKey")
	}
	key, err := sas.DecodeKey(cs.SharedAccessKey)
	if err != nil {
		return nil, err
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if caPEM != nil {
		pool := x509.NewCertPool()
		if systemRoots {
			if sp, err := x509.SystemCertPool(); err == nil {
				pool = sp
			}
		}
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, errors.New("the CA file holds no PEM certificate")
		}
		tc.RootCAs = pool
	}
	host := cs.HostName
	if h, _, err := net.SplitHostPort(host); err == nil {
		tc.ServerName = h
	} else {
		tc.ServerName = host
	}
	return &Client{
		base: "https://" + host, host: host, keyName: cs.SharedAccessKeyName, key: key,
		http: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: false}},
		Now:  time.Now,
	}, nil
}

// Host is the HostName of the connection string.
func (c *Client) Host() string { return c.host }

// Error is a non-2xx answer.
type Error struct {
	Status  int
	Details dps.ErrorDetails
	Body    string
}

func (e *Error) Error() string {
	if e.Details.Message != "" {
		return fmt.Sprintf("%s (HTTP %d, errorCode %d, trackingId %s)", e.Details.Message, e.Status, e.Details.ErrorCode, e.Details.TrackingID)
	}
	return fmt.Sprintf("HTTP %d: %s", e.Status, strings.TrimSpace(e.Body))
}

// Request describes one call.
type Request struct {
	Method  string
	Path    string // e.g. /enrollments/dev-1 (IDs already escaped)
	IfMatch string
	Header  http.Header
	Body    any // JSON-encoded unless nil
}

// Do sends req and decodes a JSON answer into out (when non-nil). It returns
// the response (body consumed) for headers such as x-ms-continuation.
func (c *Client) Do(ctx context.Context, req Request, out any) (*http.Response, error) {
	var body io.Reader
	if req.Body != nil {
		b, err := json.Marshal(req.Body)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	sep := "?"
	if strings.Contains(req.Path, "?") {
		sep = "&"
	}
	hr, err := http.NewRequestWithContext(ctx, req.Method, c.base+req.Path+sep+"api-version="+APIVersion, body)
	if err != nil {
		return nil, err
	}
	for k, v := range req.Header {
		hr.Header[k] = v
	}
	hr.Header.Set("Accept", "application/json")
	if req.Body != nil {
		hr.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	if req.IfMatch != "" {
		hr.Header.Set("If-Match", req.IfMatch)
	}
	hr.Header.Set("Authorization", sas.New(c.host, c.keyName, c.key, c.Now().Add(time.Hour), true))
	resp, err := c.http.Do(hr)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return resp, err
	}
	if resp.StatusCode >= 300 {
		e := &Error{Status: resp.StatusCode, Body: string(b)}
		_ = json.Unmarshal(b, &e.Details)
		return resp, e
	}
	if out != nil && len(bytes.TrimSpace(b)) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return resp, fmt.Errorf("decoding the answer of %s %s: %w", req.Method, req.Path, err)
		}
	}
	return resp, nil
}
