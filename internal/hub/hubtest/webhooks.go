package hubtest

import (
	"encoding/json"
	"net/http"
	"sync"
	"testing"

	"github.com/dpsd/dpsd/internal/allocation"
	"github.com/dpsd/dpsd/internal/hub"
)

// RegistryWebhook receives dpsd's registry webhook events. It answers 401
// to a delivery whose signature does not verify with its secret, and 204
// (or what SetAnswer says) to one that does.
type RegistryWebhook struct {
	*Server
	Secret string

	mu     sync.Mutex
	events []hub.Event
	status int
	body   string
}

// NewRegistryWebhook starts a receiver; the URL to give dpsd is its URL
// plus any path, e.g. w.URL + "/dpsd".
func NewRegistryWebhook(t testing.TB, o Options, secret string) *RegistryWebhook {
	t.Helper()
	w := &RegistryWebhook{Secret: secret, status: http.StatusNoContent}
	w.Server = start(t, o, w.serve, func(int) []byte { return []byte(`{"error":"failed on purpose"}`) })
	return w
}

// SetAnswer sets the status and body of answers to verified deliveries.
func (w *RegistryWebhook) SetAnswer(status int, body string) {
	w.mu.Lock()
	w.status, w.body = status, body
	w.mu.Unlock()
}

// Events returns the events of the deliveries whose signature verified.
func (w *RegistryWebhook) Events() []hub.Event {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]hub.Event(nil), w.events...)
}

func (w *RegistryWebhook) serve(rw http.ResponseWriter, r *http.Request, body []byte) string {
	if r.Method != http.MethodPost {
		http.Error(rw, "POST only", http.StatusMethodNotAllowed)
		return "not a POST"
	}
	if !hub.VerifySignature([]byte(w.Secret), body, r.Header.Get(hub.SignatureHeader)) {
		writeJSON(rw, http.StatusUnauthorized, []byte(`{"error":"signature does not verify"}`))
		return "signature does not verify"
	}
	var ev hub.Event
	if err := json.Unmarshal(body, &ev); err != nil {
		writeJSON(rw, http.StatusBadRequest, []byte(`{"error":"not an event"}`))
		return "not an event: " + err.Error()
	}
	w.mu.Lock()
	w.events = append(w.events, ev)
	status, answer := w.status, w.body
	w.mu.Unlock()
	rw.WriteHeader(status)
	rw.Write([]byte(answer))
	return ""
}

// AllocationWebhook is a custom allocation webhook. By default it assigns
// every device to the first of the linkedHubs it is offered; Respond and
// SetAnswer change that.
type AllocationWebhook struct {
	*Server

	mu       sync.Mutex
	requests []allocation.CustomRequest
	respond  func(*allocation.CustomRequest) (int, []byte)
}

// NewAllocationWebhook starts a webhook; give dpsd its URL plus any path.
func NewAllocationWebhook(t testing.TB, o Options) *AllocationWebhook {
	t.Helper()
	a := &AllocationWebhook{respond: func(req *allocation.CustomRequest) (int, []byte) {
		if len(req.LinkedHubs) == 0 {
			return http.StatusBadRequest, []byte(`{"error":"no linked hubs"}`)
		}
		b, _ := json.Marshal(allocation.CustomResponse{IotHubHostName: req.LinkedHubs[0]})
		return http.StatusOK, b
	}}
	a.Server = start(t, o, a.serve, func(int) []byte { return []byte(`{"error":"failed on purpose"}`) })
	return a
}

// Respond makes f decide every answer.
func (a *AllocationWebhook) Respond(f func(*allocation.CustomRequest) (status int, body []byte)) {
	a.mu.Lock()
	a.respond = f
	a.mu.Unlock()
}

// SetAnswer makes every answer this status and body.
func (a *AllocationWebhook) SetAnswer(status int, body string) {
	a.Respond(func(*allocation.CustomRequest) (int, []byte) { return status, []byte(body) })
}

// Requests returns the allocation requests received, parsed.
func (a *AllocationWebhook) Requests() []allocation.CustomRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]allocation.CustomRequest(nil), a.requests...)
}

func (a *AllocationWebhook) serve(w http.ResponseWriter, r *http.Request, body []byte) string {
	var req allocation.CustomRequest
	if r.Method != http.MethodPost || json.Unmarshal(body, &req) != nil {
		writeJSON(w, http.StatusBadRequest, []byte(`{"error":"not an AllocationRequest"}`))
		return "not a POSTed AllocationRequest"
	}
	a.mu.Lock()
	a.requests = append(a.requests, req)
	f := a.respond
	a.mu.Unlock()
	status, answer := f(&req)
	writeJSON(w, status, answer)
	return ""
}
