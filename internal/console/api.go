package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/dpsd/dpsd/internal/dps"
)

// apiError is a refusal of the service API, shown as the API worded it.
type apiError struct {
	Status     int
	Code       int
	Message    string
	TrackingID string
}

func (e *apiError) Error() string { return e.Message }

// call is one request to the service API on behalf of s: method and path
// (escaped), a JSON body when body is not nil, extra headers. The answer is
// decoded into out when it is not nil; the response headers are returned
// for paging. A refusal is an *apiError.
func (c *Console) call(r *http.Request, s *session, method, path string, hdr http.Header, body, out any) (http.Header, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(r.Context(), method, "https://"+r.Host+path, rd)
	if err != nil {
		return nil, err
	}
	req.Host, req.RemoteAddr, req.TLS = r.Host, r.RemoteAddr, r.TLS
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", s.token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	rec := &recorder{header: http.Header{}}
	c.API.ServeHTTP(rec, req)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	if rec.status >= 300 {
		var d dps.ErrorDetails
		e := &apiError{Status: rec.status, Message: strings.TrimSpace(rec.body.String())}
		if json.Unmarshal(rec.body.Bytes(), &d) == nil && d.Message != "" {
			e.Code, e.Message, e.TrackingID = d.ErrorCode, d.Message, d.TrackingID
		}
		if e.Message == "" {
			e.Message = http.StatusText(rec.status)
		}
		return rec.header, e
	}
	if out != nil && rec.body.Len() > 0 {
		if err := json.Unmarshal(rec.body.Bytes(), out); err != nil {
			return rec.header, fmt.Errorf("decoding the answer of %s %s: %w", method, path, err)
		}
	}
	return rec.header, nil
}

// recorder is the ResponseWriter of an in-process API call.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (w *recorder) Header() http.Header { return w.header }
func (w *recorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}
func (w *recorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.body.Write(b)
}

// esc escapes one path segment.
func esc(id string) string { return url.PathEscape(id) }
