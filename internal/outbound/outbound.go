// Package outbound is the one HTTP client dpsd uses to call out: IoT hubs'
// registry APIs, operators' registry webhooks and custom allocation
// webhooks. Every call made through it follows the same rules, so that a
// URL typed by a user cannot turn dpsd into something that leaks secrets
// or hangs:
//
//   - TLS is always verified, against the system roots plus the PEM
//     certificates of an optional file (dpsd serve --outbound-ca-file).
//   - Plain http:// is allowed only to loopback addresses (127.0.0.0/8, ::1,
//     localhost), and the connection it opens must really reach one.
//   - A redirect is followed only to the same scheme, host and method.
//   - Each call has a timeout, and a response body is read up to a limit.
//   - Requests carry User-Agent dpsd/<version>.
//
// Failures are *Error values whose Kind tells a caller whether trying again
// can help (Retryable), and whose text never contains a URL's query or user
// information: webhook URLs carry keys there (Azure Functions' ?code=).
//
// The service API and the CLI call CheckURL on every webhook URL a user
// gives, so a bad URL is refused when it is entered rather than when a
// device registers.
package outbound

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
	"unicode/utf8"
)

// Defaults for Options left zero.
const (
	DefaultTimeout          = 10 * time.Second
	DefaultMaxResponseBytes = 1 << 20
	// MaxURLLength bounds a URL CheckURL accepts.
	MaxURLLength = 2048
	// maxRedirects bounds same-origin redirects.
	maxRedirects = 3
)

// Options configure a Client.
type Options struct {
	// CAFile names a PEM file of certificates trusted in addition to the
	// system roots; empty for none.
	CAFile string
	// Version is dpsd's version, sent as User-Agent dpsd/<Version>.
	Version string
	// Timeout bounds a call that sets none (DefaultTimeout when zero).
	Timeout time.Duration
	// MaxResponseBytes bounds a response body (DefaultMaxResponseBytes
	// when zero).
	MaxResponseBytes int64
}

// Client makes outbound calls. It is safe for concurrent use and keeps
// connections open between calls.
type Client struct {
	hc        *http.Client
	userAgent string
	timeout   time.Duration
	maxBody   int64
}

// Request is one call.
type Request struct {
	Method string
	URL    string
	Header http.Header // may be nil
	Body   []byte      // nil for none
	// Timeout bounds this call (the client's when zero); the context may
	// end it sooner.
	Timeout time.Duration
}

// Response is an answer, whatever its status.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// New returns a client. It fails when the CA file cannot be read or holds
// no certificate.
func New(o Options) (*Client, error) {
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if o.CAFile != "" {
		if err := addPEMFile(roots, o.CAFile); err != nil {
			return nil, err
		}
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxResponseBytes <= 0 {
		o.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	dialer := &net.Dialer{Timeout: o.Timeout, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		// Requests to loopback are never proxied, so the dial check below
		// still sees where plain HTTP goes.
		Proxy: http.ProxyFromEnvironment,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := dialer.DialContext(ctx, network, addr)
			if err != nil || ctx.Value(loopbackOnlyKey{}) == nil {
				return conn, err
			}
			// Plain HTTP: "localhost" must really have resolved to a
			// loopback address.
			if ap, ok := conn.RemoteAddr().(*net.TCPAddr); !ok || !ap.IP.IsLoopback() {
				conn.Close()
				return nil, &loopbackError{addr: conn.RemoteAddr().String()}
			}
			return conn, nil
		},
		TLSClientConfig:       &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   o.Timeout,
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	return &Client{
		hc: &http.Client{
			Transport:     tr,
			CheckRedirect: checkRedirect,
		},
		userAgent: "dpsd/" + o.Version,
		timeout:   o.Timeout,
		maxBody:   o.MaxResponseBytes,
	}, nil
}

func addPEMFile(pool *x509.CertPool, name string) error {
	data, err := os.ReadFile(name)
	if err != nil {
		return fmt.Errorf("outbound CA file: %w", err)
	}
	n := 0
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return fmt.Errorf("outbound CA file %s: certificate %d: %v", name, n+1, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return fmt.Errorf("outbound CA file %s holds no PEM certificate", name)
	}
	return nil
}

// Do sends the request and reads the answer. A non-2xx status is not an
// error: callers judge statuses themselves.
func (c *Client) Do(ctx context.Context, r *Request) (*Response, error) {
	u, err := CheckURL(r.URL)
	if err != nil {
		return nil, &Error{Kind: KindURL, Method: r.Method, URL: Redact(r.URL), Err: err}
	}
	e := func(k Kind, err error) *Error { return &Error{Kind: k, Method: r.Method, URL: Redact(r.URL), Err: err} }
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = c.timeout
	}
	if d, ok := ctx.Deadline(); ok && time.Until(d) < timeout {
		timeout = max(time.Until(d), 0).Round(time.Millisecond)
	}
	callCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if u.Scheme == "http" {
		callCtx = context.WithValue(callCtx, loopbackOnlyKey{}, true)
	}
	var body io.Reader
	if r.Body != nil {
		body = bytes.NewReader(r.Body)
	}
	req, err := http.NewRequestWithContext(callCtx, r.Method, u.String(), body)
	if err != nil {
		return nil, e(KindURL, err)
	}
	for k, vs := range r.Header {
		req.Header[k] = vs
	}
	req.Header.Set("User-Agent", c.userAgent)
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, e(classify(ctx, callCtx, err), unwrapURLError(err, timeout))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, c.maxBody+1))
	if err != nil {
		return nil, e(classify(ctx, callCtx, err), unwrapURLError(err, timeout))
	}
	if int64(len(data)) > c.maxBody {
		return nil, e(KindTooLarge, fmt.Errorf("the response body exceeds %d bytes", c.maxBody))
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: data}, nil
}

type loopbackOnlyKey struct{}

type loopbackError struct{ addr string }

func (e *loopbackError) Error() string {
	return fmt.Sprintf("plain http:// reached %s, which is not a loopback address; use https://", e.addr)
}

type redirectError struct{ msg string }

func (e *redirectError) Error() string { return e.msg }

func checkRedirect(req *http.Request, via []*http.Request) error {
	first := via[0]
	switch {
	case len(via) > maxRedirects:
		return &redirectError{fmt.Sprintf("stopped after %d redirects", maxRedirects)}
	case req.URL.Scheme != first.URL.Scheme || !strings.EqualFold(req.URL.Host, first.URL.Host):
		return &redirectError{fmt.Sprintf("refused a redirect to %s: redirects are followed only within %s://%s", Redact(req.URL.String()), first.URL.Scheme, first.URL.Host)}
	case req.Method != first.Method:
		return &redirectError{fmt.Sprintf("refused a redirect that turns %s into %s", first.Method, req.Method)}
	}
	return nil
}

// classify names what went wrong. parent is the caller's context, call the
// one bounded by the call's timeout.
func classify(parent, call context.Context, err error) Kind {
	var (
		re  *redirectError
		le  *loopbackError
		ve  *tls.CertificateVerificationError
		ue  x509.UnknownAuthorityError
		he  x509.HostnameError
		ie  x509.CertificateInvalidError
		rhe tls.RecordHeaderError
		ne  net.Error
	)
	switch {
	case errors.As(err, &re):
		return KindRedirect
	case errors.As(err, &le):
		return KindURL
	case errors.As(err, &ve), errors.As(err, &ue), errors.As(err, &he), errors.As(err, &ie), errors.As(err, &rhe):
		return KindTLS
	case errors.Is(parent.Err(), context.Canceled):
		return KindCanceled
	case call.Err() != nil, errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return KindTimeout
	}
	return KindNetwork
}

// unwrapURLError drops net/http's *url.Error wrapper, whose text repeats the
// full URL (query included), and says plainly when the call timed out.
func unwrapURLError(err error, timeout time.Duration) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("no answer within %v", timeout)
	}
	return err
}

// CheckURL parses an outbound URL and applies the rules every outbound call
// follows: absolute, https to any host, or http to a loopback address only.
// The service API and CLI call it on webhook URLs users enter.
func CheckURL(raw string) (*url.URL, error) {
	if len(raw) > MaxURLLength {
		return nil, fmt.Errorf("URL is longer than %d characters", MaxURLLength)
	}
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its text would repeat the URL, keys included
		}
		return nil, fmt.Errorf("URL is not valid: %v", err)
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, errors.New("URL has no host; give an absolute URL such as https://example.com/hook")
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
	case "http":
		if !IsLoopbackHost(u.Hostname()) {
			return nil, fmt.Errorf("plain http:// is allowed only to loopback addresses (127.0.0.1, ::1, localhost), not %s; use https://", u.Hostname())
		}
	default:
		return nil, fmt.Errorf("URL scheme %q is not https (or http to a loopback address)", u.Scheme)
	}
	return u, nil
}

// IsLoopbackHost reports whether host (no port) is localhost or a loopback
// IP address.
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Redact returns the URL for messages and logs: scheme, host and path,
// without user information, query or fragment, which may carry keys.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(invalid URL)"
	}
	s := u.Scheme + "://" + u.Host + u.EscapedPath()
	if u.RawQuery != "" {
		s += "?****"
	}
	return s
}

// Excerpt shows a peer's answer in a message: trimmed, valid UTF-8, cut to
// at most n bytes (plus "...") on a character boundary.
func Excerpt(b []byte, n int) string {
	s := strings.ToValidUTF8(strings.TrimSpace(string(b)), "?")
	if s == "" {
		return "(empty body)"
	}
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}
