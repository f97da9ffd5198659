// Package deviceapi serves the DPS device runtime API over HTTPS:
//
//	PUT  /{idScope}/registrations/{registrationId}/register
//	GET  /{idScope}/registrations/{registrationId}/operations/{operationId}
//	POST /{idScope}/registrations/{registrationId}
//
// It only translates HTTP to a provisioning.Request and the answer back; the
// decisions are the pipeline's.
package deviceapi

import (
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/dpsd/dpsd/internal/attest"
	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/httpx"
	"github.com/dpsd/dpsd/internal/limits"
	"github.com/dpsd/dpsd/internal/provisioning"
)

// API serves the device API.
type API struct {
	// Pipeline is the provisioning pipeline, or a limits.Gate in front of
	// it (throttling, fault injection).
	Pipeline limits.Provisioner
	Log      *slog.Logger
	// Endpoint returns the advertised device endpoint (host:port), the host
	// of the Location header; nil: no Location header. It comes from the
	// configuration, never from the request's Host header, which the
	// client chooses.
	Endpoint func() string
}

func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	segs := strings.Split(strings.Trim(r.URL.EscapedPath(), "/"), "/")
	for i, s := range segs {
		u, err := url.PathUnescape(s)
		if err != nil {
			httpx.WriteError(w, r, a.Log, dpserr.BadRequest("the request path is not valid: %v", err))
			return
		}
		segs[i] = u
	}
	if len(segs) < 3 || !strings.EqualFold(segs[1], "registrations") {
		a.notFound(w, r)
		return
	}
	var handle func(http.ResponseWriter, *http.Request, []string) error
	method := ""
	switch {
	case len(segs) == 4 && strings.EqualFold(segs[3], "register"):
		method, handle = http.MethodPut, a.register
	case len(segs) == 5 && strings.EqualFold(segs[3], "operations"):
		method, handle = http.MethodGet, a.operation
	case len(segs) == 3:
		method, handle = http.MethodPost, a.status
	default:
		a.notFound(w, r)
		return
	}
	if r.Method != method {
		httpx.WriteError(w, r, a.Log, dpserr.New(http.StatusMethodNotAllowed, dpserr.CodeMethodNotAllowed, "method %s is not allowed on %s; use %s", dps.Truncate(r.Method), dps.Truncate(r.URL.Path), method))
		return
	}
	if err := handle(w, r, segs); err != nil {
		if errors.Is(err, limits.ErrDrop) {
			// An injected fault: net/http closes the connection without an
			// answer (and logs nothing; the fault was logged).
			panic(http.ErrAbortHandler)
		}
		httpx.WriteError(w, r, a.Log, err)
	}
}

func (a *API) notFound(w http.ResponseWriter, r *http.Request) {
	httpx.WriteError(w, r, a.Log, dpserr.NotFound(dpserr.CodeNotFound, "no device API operation at %s %s; devices use /{idScope}/registrations/{registrationId}/register", dps.Truncate(r.Method), dps.Truncate(r.URL.Path)))
}

// request builds the pipeline request: addressing from the path, credentials
// from TLS and the Authorization header, and the body when there is one (a
// poll may carry "{}", which Node sends). A body that does not parse is
// refused here, and recorded in the refusal journal as the pipeline's own
// refusals are (op names the request).
func (a *API) request(r *http.Request, segs []string, op string) (provisioning.Request, error) {
	req := provisioning.Request{
		Transport:      "https",
		TrackingID:     httpx.RequestID(r.Context()),
		IDScope:        segs[0],
		RegistrationID: segs[2],
		APIVersion:     r.URL.Query().Get("api-version"),
		Credentials:    attest.Credentials{SAS: r.Header.Get("Authorization")},
		Peer:           r.RemoteAddr,
	}
	if r.TLS != nil {
		req.Credentials.Certificates = r.TLS.PeerCertificates
	}
	if op != provisioning.OpPoll {
		b, err := httpx.ReadBody(r)
		if err != nil {
			return req, a.Pipeline.Refused(&req, op, err)
		}
		if req.Body, err = provisioning.ParseBody(b); err != nil {
			return req, a.Pipeline.Refused(&req, op, err)
		}
	}
	return req, nil
}

func (a *API) register(w http.ResponseWriter, r *http.Request, segs []string) error {
	req, err := a.request(r, segs, provisioning.OpRegister)
	if err != nil {
		return err
	}
	ans, err := a.Pipeline.Register(r.Context(), req)
	if err != nil {
		return err
	}
	if ans.Challenge != nil {
		// A TPM device's first register: the challenge is the whole body.
		httpx.WriteJSON(w, ans.Status, ans.Challenge)
		return nil
	}
	if a.Endpoint != nil {
		w.Header().Set("Location", "https://"+a.Endpoint()+"/"+url.PathEscape(segs[0])+"/registrations/"+url.PathEscape(segs[2])+"/register")
	}
	writeAnswer(w, ans)
	return nil
}

func (a *API) operation(w http.ResponseWriter, r *http.Request, segs []string) error {
	req, err := a.request(r, segs, provisioning.OpPoll)
	if err != nil {
		return err
	}
	ans, err := a.Pipeline.OperationStatus(r.Context(), req, segs[4])
	if err != nil {
		return err
	}
	writeAnswer(w, ans)
	return nil
}

func (a *API) status(w http.ResponseWriter, r *http.Request, segs []string) error {
	req, err := a.request(r, segs, provisioning.OpLookup)
	if err != nil {
		return err
	}
	res, err := a.Pipeline.RegistrationStatus(r.Context(), req)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, res)
	return nil
}

func writeAnswer(w http.ResponseWriter, ans *provisioning.Answer) {
	if ans.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(ans.RetryAfter))
	}
	httpx.WriteJSON(w, ans.Status, ans.Body)
}
