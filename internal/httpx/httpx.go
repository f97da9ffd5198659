// Package httpx holds the HTTP plumbing both dpsd APIs share: request IDs,
// body limits, JSON decoding into typed 400s, JSON and error rendering, and
// panic recovery. Handlers stay thin by leaning on it.
package httpx

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
)

// ContentTypeJSON is what every JSON response carries; the Node SDKs parse a
// body only when the content type says JSON.
const ContentTypeJSON = "application/json; charset=utf-8"

type ctxKey int

const requestIDKey ctxKey = 0

// RequestID returns the request's tracking ID, set by Wrap.
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey).(string)
	return id
}

// Wrap gives every request a tracking ID (x-ms-request-id), caps the body at
// dps.MaxMessageBytes, and turns a panic into a logged 500.
func Wrap(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := dps.NewUUID()
		r = r.WithContext(context.WithValue(r.Context(), requestIDKey, id))
		w.Header().Set("x-ms-request-id", id)
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, dps.MaxMessageBytes)
		}
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				WriteError(w, r, log, dpserr.Internal(fmt.Errorf("panic: %v", v)))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// WriteJSON writes v with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // messages quote SAS syntax and URLs; keep & < > readable
	err := enc.Encode(v)
	b := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"errorCode":500001,"message":"response encoding failed"}`)
	}
	w.Header().Set("Content-Type", ContentTypeJSON)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}

// WriteError renders err as a DPS error body and logs it with the same
// tracking ID: client errors at Info (they are the caller's to fix), server
// errors at Error.
func WriteError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	e := dpserr.As(err)
	id := RequestID(r.Context())
	if id == "" {
		id = dps.NewUUID()
	}
	LogError(log, r.Context(), e, id, slog.String("method", dps.Truncate(r.Method)), slog.String("path", dps.Truncate(r.URL.Path)))
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	w.Header().Set("x-ms-error-code", strconv.Itoa(e.Code))
	WriteJSON(w, e.Status, dpserr.Details(e, id, time.Now()))
}

// LogError writes the one log line of a refused or failed request.
func LogError(log *slog.Logger, ctx context.Context, e *dpserr.Error, trackingID string, attrs ...slog.Attr) {
	level := slog.LevelInfo
	if e.Status >= 500 {
		level = slog.LevelError
	}
	a := append([]slog.Attr{
		slog.String("trackingId", trackingID),
		slog.Int("status", e.Status),
		slog.Int("errorCode", e.Code),
		slog.String("reason", e.Error()),
	}, attrs...)
	if e.Code == dpserr.CodeUnavailable {
		if n, ok := unavailableLines.allow(time.Now()); !ok {
			level = slog.LevelDebug
		} else if n > 0 {
			a = append(a, slog.Int("sameSinceLastLine", n))
		}
	}
	log.LogAttrs(ctx, level, "request refused", a...)
}

// unavailableLines limits the Error lines of 503 answers to one every
// unavailableLogEvery: while the database is down every request fails, and
// the store logs the outage itself. The others are logged at Debug, with
// their tracking IDs.
var unavailableLines limiter

const unavailableLogEvery = 10 * time.Second

type limiter struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// allow reports whether a line may be logged now and how many were not
// since the last one.
func (l *limiter) allow(now time.Time) (int, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.last) < unavailableLogEvery {
		l.suppressed++
		return 0, false
	}
	n := l.suppressed
	l.last, l.suppressed = now, 0
	return n, true
}

// DecodeJSON reads a JSON body into v. An empty body is an error unless
// allowEmpty. Unknown fields are ignored, as Azure does.
func DecodeJSON(r *http.Request, v any, allowEmpty bool) error {
	b, err := ReadBody(r)
	if err != nil {
		return err
	}
	return DecodeBytes(b, v, allowEmpty)
}

// ReadBody reads the (capped) body of a request to a JSON endpoint. A body
// sent with a Content-Type that is not JSON is refused (415) rather than
// read as JSON; one sent without a Content-Type is read as JSON.
func ReadBody(r *http.Request) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	b, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, TooLarge()
		}
		return nil, dpserr.Malformed("reading the request body: %v", err)
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && len(bytes.TrimSpace(b)) > 0 && !isJSON(ct) {
		return nil, dpserr.New(http.StatusUnsupportedMediaType, dpserr.CodeUnsupportedMediaType,
			"the request body is sent as %q; this endpoint reads JSON: send it with Content-Type: application/json", dps.Truncate(ct))
	}
	return b, nil
}

// isJSON reports whether a Content-Type names JSON: application/json,
// text/json, or a type with the +json suffix, with any parameters.
func isJSON(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	return mt == "application/json" || mt == "text/json" || strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")
}

// DecodeBytes is DecodeJSON for a body already read (bulk items, MQTT payloads).
// Text that is not UTF-8, and the NUL character, are refused here, at the
// edge: kept raw (in a payload or an initial twin), either would be stored
// on SQLite and refused by PostgreSQL, and an export could not move it.
func DecodeBytes(b []byte, v any, allowEmpty bool) error {
	if len(strings.TrimSpace(string(b))) == 0 {
		if allowEmpty {
			return nil
		}
		return dpserr.Malformed("the request body is empty; a JSON object is required")
	}
	if err := dps.CheckJSONText(b); err != nil {
		return dpserr.Malformed("the request body is not valid: %v", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return dpserr.Malformed("the request body is not valid: field %q must be %s, not a JSON %s", memberPath(reflect.TypeOf(v), te.Field), jsonKind(te.Type.Kind().String()), te.Value)
		}
		return dpserr.Malformed("the request body is not valid JSON: %v", err)
	}
	return nil
}

// memberPath is a decoder's field path as the body spells it: without the
// Go names of the embedded structs it passed through (encoding/json reports
// "EnrollmentSettings.attestation" for the member "attestation").
func memberPath(t reflect.Type, field string) string {
	embedded := map[string]bool{}
	seen := map[reflect.Type]bool{}
	var walk func(reflect.Type)
	walk = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array || t.Kind() == reflect.Map {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || seen[t] {
			return
		}
		seen[t] = true
		for i := range t.NumField() {
			f := t.Field(i)
			if f.Anonymous {
				embedded[f.Name] = true
			}
			walk(f.Type)
		}
	}
	walk(t)
	var path []string
	for _, name := range strings.Split(field, ".") {
		if !embedded[name] {
			path = append(path, name)
		}
	}
	return strings.Join(path, ".")
}

// TooLarge is the error for a body over the DPS limit.
func TooLarge() *dpserr.Error {
	return dpserr.New(http.StatusRequestEntityTooLarge, dpserr.CodeTooLarge, "the request body is larger than the %d KB limit", dps.MaxMessageBytes>>10)
}

func jsonKind(k string) string {
	switch k {
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "struct", "map", "ptr":
		return "an object"
	case "slice", "array":
		return "an array"
	}
	return "a number"
}

// IfMatch returns the If-Match header value ("" when absent).
//
// A quoted wildcard ("*", which C# clients may send, as they quote every
// etag) is the wildcard.
func IfMatch(r *http.Request) string {
	v := strings.TrimSpace(r.Header.Get("If-Match"))
	if v == `"*"` {
		return "*"
	}
	return v
}

// routeHolder lets a handler deep in the chain name the route for the
// metrics middleware wrapped around it.
type routeHolder struct{ name string }

const routeKey ctxKey = 1

// WithRouteHolder prepares r so that SetRoute can name its route.
func WithRouteHolder(r *http.Request) (*http.Request, func() string) {
	h := &routeHolder{}
	return r.WithContext(context.WithValue(r.Context(), routeKey, h)), func() string { return h.name }
}

// SetRoute names the route serving r (for metrics); a no-op without a holder.
func SetRoute(r *http.Request, name string) {
	if h, ok := r.Context().Value(routeKey).(*routeHolder); ok {
		h.name = name
	}
}
