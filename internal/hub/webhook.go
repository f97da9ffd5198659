package hub

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/outbound"
)

// Headers of a registry webhook delivery.
const (
	// SignatureHeader carries "sha256=" and the lower-case hex
	// HMAC-SHA256 of the exact body bytes, keyed with the webhook secret.
	SignatureHeader = "X-Dpsd-Signature-256"
	// EventHeader carries the event type.
	EventHeader = "X-Dpsd-Event"
	// DeliveryHeader carries the event ID, the same on every retry of one
	// event, so a receiver can drop duplicates.
	DeliveryHeader = "X-Dpsd-Delivery"
)

// Event types of a registry webhook.
const (
	EventDeviceAssigned = "deviceAssigned"
	EventDeviceRemoved  = "deviceRemoved"
)

// Event is the JSON body of a registry webhook delivery.
type Event struct {
	Type           string    `json:"eventType"`
	ID             string    `json:"eventId"`
	Time           time.Time `json:"eventTime"`
	Hub            string    `json:"hub"`
	RegistrationID string    `json:"registrationId"`
	DeviceID       string    `json:"deviceId"`

	// deviceAssigned only.
	Substatus      string                  `json:"substatus,omitempty"`
	Attestation    string                  `json:"attestation,omitempty"`
	Authentication *Authentication         `json:"authentication,omitempty"`
	Capabilities   *dps.DeviceCapabilities `json:"capabilities,omitempty"`
	InitialTwin    *dps.InitialTwin        `json:"initialTwin,omitempty"`
	TwinMode       string                  `json:"twinMode,omitempty"`
	Payload        json.RawMessage         `json:"payload,omitempty"`
	PreviousHub    string                  `json:"previousHub,omitempty"`

	// deviceRemoved only.
	NewHub string `json:"newHub,omitempty"`
}

// Sign returns the SignatureHeader value for a body.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// VerifySignature reports whether header is the signature of body under
// secret. The comparison takes constant time.
func VerifySignature(secret, body []byte, header string) bool {
	hexSig, ok := strings.CutPrefix(header, "sha256=")
	if !ok {
		return false
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil {
		return false
	}
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return hmac.Equal(got, m.Sum(nil))
}

// Webhook is a registry that POSTs each assignment and removal, as an
// Event, to an operator's URL. Any 2xx answer is success; the body of the
// answer is ignored. 401 and 403 mean the receiver refused dpsd's
// signature.
type Webhook struct {
	hub    string
	url    string
	secret []byte
	client *outbound.Client
	retry  Retry
	now    func() time.Time
}

func newWebhook(c Config, o Options) *Webhook {
	return &Webhook{hub: c.Hub, url: c.WebhookURL, secret: []byte(c.WebhookSecret), client: o.Client, retry: o.Retry, now: o.Now}
}

// Apply sends a deviceAssigned event.
func (w *Webhook) Apply(ctx context.Context, a *Assignment) error {
	if err := a.Auth.check(); err != nil {
		return err
	}
	ev := &Event{Type: EventDeviceAssigned, RegistrationID: a.RegistrationID, DeviceID: a.DeviceID,
		Substatus: a.Substatus, Attestation: a.Attestation, Authentication: &a.Auth,
		Capabilities: &dps.DeviceCapabilities{IotEdge: a.IotEdge}, InitialTwin: a.Twin, TwinMode: a.TwinMode.String(),
		Payload: a.Payload, PreviousHub: a.PreviousHub}
	return w.send(ctx, ev, a.Auth.secrets())
}

// Twin returns nil: a webhook cannot be asked. A receiver that keeps twins
// migrates them itself, from the deviceAssigned event's previousHub.
func (w *Webhook) Twin(context.Context, string) (*dps.InitialTwin, error) { return nil, nil }

// Remove sends a deviceRemoved event.
func (w *Webhook) Remove(ctx context.Context, r *Removal) error {
	return w.send(ctx, &Event{Type: EventDeviceRemoved, RegistrationID: r.RegistrationID, DeviceID: r.DeviceID, NewHub: r.NewHub}, nil)
}

func (w *Webhook) send(ctx context.Context, ev *Event, secrets []string) error {
	ev.ID = dps.NewUUID()
	ev.Time = w.now().UTC()
	ev.Hub = w.hub
	body, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	hdr := http.Header{
		"Content-Type":  {"application/json; charset=utf-8"},
		SignatureHeader: {Sign(w.secret, body)},
		EventHeader:     {ev.Type},
		DeliveryHeader:  {ev.ID},
	}
	build := func() *outbound.Request {
		return &outbound.Request{Method: http.MethodPost, URL: w.url, Header: hdr.Clone(), Body: body}
	}
	resp, n, err := do(ctx, w.client, w.retry, build)
	e := &Error{Hub: w.hub, Registry: KindWebhook, URL: outbound.Redact(w.url), Op: ev.Type + " event", DeviceID: ev.DeviceID, Attempts: n}
	if err != nil {
		e.Err = err
		return e
	}
	if resp.Status/100 == 2 {
		return nil
	}
	e.Status = resp.Status
	e.Answer = quoteAnswer(resp.Body, append(secrets, string(w.secret)))
	return e
}
