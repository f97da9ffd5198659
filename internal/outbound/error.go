package outbound

import (
	"errors"
	"fmt"
)

// Kind says what kind of failure an Error is.
type Kind int

const (
	// KindNetwork: the peer could not be reached or the connection broke.
	KindNetwork Kind = iota + 1
	// KindTimeout: no complete answer within the call's timeout or the
	// caller's deadline.
	KindTimeout
	// KindCanceled: the caller gave up.
	KindCanceled
	// KindURL: the URL breaks the outbound rules (scheme, plain http to a
	// non-loopback address).
	KindURL
	// KindTLS: the peer's certificate did not verify, or it does not speak
	// TLS.
	KindTLS
	// KindRedirect: a redirect to another origin or method was refused.
	KindRedirect
	// KindTooLarge: the response body exceeds the limit.
	KindTooLarge
)

func (k Kind) String() string {
	switch k {
	case KindNetwork:
		return "network"
	case KindTimeout:
		return "timeout"
	case KindCanceled:
		return "canceled"
	case KindURL:
		return "url"
	case KindTLS:
		return "tls"
	case KindRedirect:
		return "redirect"
	case KindTooLarge:
		return "too large"
	}
	return "unknown"
}

// Error is a call that got no usable answer. Its text names the method and
// the redacted URL.
type Error struct {
	Kind   Kind
	Method string
	URL    string // redacted: no user information or query
	Err    error
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s %s: %v", e.Method, e.URL, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Timeout reports whether the call timed out.
func (e *Error) Timeout() bool { return e.Kind == KindTimeout }

// Retryable reports whether the same call may succeed later: the network
// failed or the peer was slow. Configuration problems (URL, TLS, redirect)
// and oversized answers are not retryable.
func (e *Error) Retryable() bool { return e.Kind == KindNetwork || e.Kind == KindTimeout }

// AsError returns err as an *Error, or nil.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}
