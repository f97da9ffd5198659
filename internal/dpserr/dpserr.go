// Package dpserr is the one place where dpsd's failures become DPS errors:
// an HTTP status, a six-digit errorCode whose first three digits are that
// status, a message safe to show the caller, and a reason for the log.
package dpserr

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/dpsd/dpsd/internal/dps"
)

// Error codes. Those Azure is known to use keep Azure's numbers; the others
// follow Azure's rule (HTTP status × 1000 + a sub-code).
const (
	CodeWebSocketUpgrade       = 400000 // not a WebSocket upgrade offering the mqtt subprotocol
	CodeBadRequest             = 400001 // the body cannot be parsed
	CodeInvalidArgument        = 400004 // a value breaks a rule
	CodeCustomAllocation       = 400207 // custom allocation webhook failed
	CodeNoHub                  = 400208 // no IoT hub could be selected
	CodeHubUnauthorized        = 400209 // the hub refused dpsd's credentials
	CodeHubFailed              = 400210 // the hub (or registry webhook) failed the device's creation
	CodeHubNotFound            = 401001 // "IoTHub not found."
	CodeUnauthorized           = 401002 // authentication or authorization failed
	CodeNotFound               = 404000 // no such route
	CodeEnrollmentNotFound     = 404201
	CodeRegistrationNotFound   = 404202
	CodeOperationNotFound      = 404203
	CodeGroupNotFound          = 404204
	CodeCertificateNotFound    = 404205
	CodeLinkedHubNotFound      = 404206
	CodePolicyNotFound         = 404207
	CodeIssuingCANotFound      = 404208
	CodeIssuedCertNotFound     = 404209
	CodeMethodNotAllowed       = 405000
	CodeConflict               = 409201 // the record already exists
	CodeConcurrentRegistration = 409203 // "Precondition failed." on a racing registration
	CodePreconditionFailed     = 412001 // etag mismatch
	CodeTooLarge               = 413001
	CodeUnsupportedMediaType   = 415001 // a body sent as something else than JSON
	CodeThrottled              = 429001
	CodeInternal               = 500001
	CodeShuttingDown           = 503000 // the server is stopping and takes no new connection
	CodeUnavailable            = 503001
)

// Error is a failure with everything needed to answer it.
type Error struct {
	Status     int    // HTTP status
	Code       int    // DPS errorCode
	Message    string // shown to the caller
	Reason     string // written to the log; defaults to Message
	RetryAfter int    // seconds, for 429 and 503
	Info       map[string]string
	Err        error // underlying cause, for the log only
}

func (e *Error) Error() string {
	r := e.Reason
	if r == "" {
		r = e.Message
	}
	if e.Err != nil {
		return fmt.Sprintf("%s: %v", r, e.Err)
	}
	return r
}

func (e *Error) Unwrap() error { return e.Err }

// maxMessage bounds a message. Values a client sent are quoted shortened
// (dps.Truncate); this is the net under any that is not.
const maxMessage = 4 << 10

// New returns an error whose message is also its log reason.
func New(status, code int, format string, args ...any) *Error {
	msg := fmt.Sprintf(format, args...)
	if len(msg) > maxMessage {
		cut := maxMessage
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut] + "... (message cut)"
	}
	return &Error{Status: status, Code: code, Message: msg}
}

// BadRequest: the request body or a value in it is invalid.
func BadRequest(format string, args ...any) *Error {
	return New(http.StatusBadRequest, CodeInvalidArgument, format, args...)
}

// Malformed: the body could not be decoded at all.
func Malformed(format string, args ...any) *Error {
	return New(http.StatusBadRequest, CodeBadRequest, format, args...)
}

// Unauthorized: credentials missing, invalid, or lacking a right.
func Unauthorized(format string, args ...any) *Error {
	return New(http.StatusUnauthorized, CodeUnauthorized, format, args...)
}

// NotFound with a specific errorCode.
func NotFound(code int, format string, args ...any) *Error {
	return New(http.StatusNotFound, code, format, args...)
}

// Conflict: the record exists and the request did not say to overwrite it.
func Conflict(format string, args ...any) *Error {
	return New(http.StatusConflict, CodeConflict, format, args...)
}

// PreconditionFailed: the If-Match etag is stale.
func PreconditionFailed(format string, args ...any) *Error {
	return New(http.StatusPreconditionFailed, CodePreconditionFailed, format, args...)
}

// Internal hides err from the caller and keeps it for the log.
func Internal(err error) *Error {
	return &Error{Status: http.StatusInternalServerError, Code: CodeInternal, Message: "internal error; the server log has the details under this trackingId", Err: err}
}

// Unavailable: a dependency (the database) cannot be reached.
func Unavailable(err error) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Code: CodeUnavailable, Message: "service temporarily unavailable; retry later", RetryAfter: 5, Err: err}
}

// As returns err as an *Error, turning anything else into a 500 (or a 503 when
// the context ended, which means the caller or the server gave up).
func As(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return Unavailable(err)
	}
	return Internal(err)
}

// Details is the wire body for e.
func Details(e *Error, trackingID string, now time.Time) dps.ErrorDetails {
	return dps.ErrorDetails{
		ErrorCode:    e.Code,
		TrackingID:   trackingID,
		Message:      e.Message,
		TimestampUtc: dps.NewTime(now),
		Info:         e.Info,
	}
}
