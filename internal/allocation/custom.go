package allocation

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/enrollment"
	"github.com/dpsd/dpsd/internal/outbound"
)

// Custom allocation (docs/protocol.md, "Custom allocation webhooks"): an
// AllocationRequest is POSTed to the enrollment's webhook, and the
// AllocationResponse of a 2xx answer names the hub, optionally an initial
// twin and a payload for the device. Every failure ends the registration
// with errorCode 400207.

// CustomRequest is the AllocationRequest body.
type CustomRequest struct {
	IndividualEnrollment *dps.IndividualEnrollment `json:"individualEnrollment,omitempty"`
	EnrollmentGroup      *dps.EnrollmentGroup      `json:"enrollmentGroup,omitempty"`
	DeviceRuntimeContext DeviceRuntimeContext      `json:"deviceRuntimeContext"`
	LinkedHubs           []string                  `json:"linkedHubs"`
}

// DeviceRuntimeContext describes the registering device. Exactly one of
// X509, SymmetricKey and TPM is set, by the device's attestation.
type DeviceRuntimeContext struct {
	RegistrationID string `json:"registrationId"`
	// CurrentIotHubHostName and CurrentDeviceID are set on
	// re-provisioning only.
	CurrentIotHubHostName string `json:"currentIotHubHostName,omitempty"`
	CurrentDeviceID       string `json:"currentDeviceId,omitempty"`
	// X509 describes the device's certificate and the group's certificate
	// its chain reached, as registrationState.x509 does.
	X509         *dps.X509RegistrationResult `json:"x509,omitempty"`
	SymmetricKey *SymmetricKeyContext        `json:"symmetricKey,omitempty"`
	TPM          *dps.TPMAttestation         `json:"tpm,omitempty"`
	// Payload is the payload the device sent, if any.
	Payload json.RawMessage `json:"payload,omitempty"`
}

// SymmetricKeyContext marks symmetric-key attestation; it is sent empty,
// as DPS sends it.
type SymmetricKeyContext struct{}

// CustomResponse is an AllocationResponse.
type CustomResponse struct {
	// IotHubHostName is the chosen hub, in the spelling of linkedHubs.
	IotHubHostName string           `json:"iotHubHostName"`
	InitialTwin    *dps.InitialTwin `json:"initialTwin,omitempty"`
	Payload        json.RawMessage  `json:"payload,omitempty"`
}

// NewCustomRequest builds the request for an individual enrollment or a
// group (one of them nil), without the enrollment's keys and with the
// webhook URL's query (which holds the function key) masked.
func NewCustomRequest(e *dps.IndividualEnrollment, g *dps.EnrollmentGroup, rc DeviceRuntimeContext, linkedHubs []string) *CustomRequest {
	r := &CustomRequest{DeviceRuntimeContext: rc, LinkedHubs: linkedHubs}
	if r.LinkedHubs == nil {
		r.LinkedHubs = []string{}
	}
	if e != nil {
		c := enrollment.Redact(e)
		c.CustomAllocationDefinition = maskWebhook(c.CustomAllocationDefinition)
		r.IndividualEnrollment = c
	}
	if g != nil {
		c := enrollment.Redact(g)
		c.CustomAllocationDefinition = maskWebhook(c.CustomAllocationDefinition)
		r.EnrollmentGroup = c
	}
	return r
}

func maskWebhook(d *dps.CustomAllocationDefinition) *dps.CustomAllocationDefinition {
	if d == nil {
		return nil
	}
	c := *d
	if base, _, ok := strings.Cut(c.WebhookURL, "?"); ok {
		c.WebhookURL = base + "?****"
	}
	return &c
}

// CustomClient calls custom allocation webhooks. Calls are not retried: the
// device retries its registration.
type CustomClient struct {
	Client *outbound.Client
	// Timeout bounds a call (the client's default when zero).
	Timeout time.Duration
}

// Allocate calls the webhook and returns its answer, checked against
// req.LinkedHubs, or the failure that ends the registration.
func (c *CustomClient) Allocate(ctx context.Context, webhookURL string, req *CustomRequest) (*CustomResponse, *Failure) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, customFailure("the allocation request could not be encoded: %v", err)
	}
	resp, err := c.Client.Do(ctx, &outbound.Request{Method: http.MethodPost, URL: webhookURL,
		Header: http.Header{"Content-Type": {"application/json; charset=utf-8"}}, Body: body, Timeout: c.Timeout})
	if err != nil {
		oe := outbound.AsError(err)
		if oe == nil {
			return nil, customFailure("%v", err)
		}
		switch oe.Kind {
		case outbound.KindTimeout:
			return nil, customFailure("the webhook did not answer in time (%v)", oe.Err)
		case outbound.KindURL:
			return nil, customFailure("the enrollment's webhook URL is refused: %v", oe.Err)
		case outbound.KindTooLarge:
			return nil, customFailure("the webhook's answer is too large: %v", oe.Err)
		}
		return nil, customFailure("the webhook could not be reached: %v", oe.Err)
	}
	if resp.Status/100 != 2 {
		return nil, &Failure{dpserr.CodeCustomAllocation, fmt.Sprintf("Custom allocation failed with status code: %d. The webhook answered: %s", resp.Status, outbound.Excerpt(resp.Body, 256))}
	}
	return ParseCustomResponse(resp.Body, req.LinkedHubs)
}

// ParseCustomResponse reads an AllocationResponse and checks that it names
// one of linkedHubs (ignoring case); the hub is returned in the spelling of
// linkedHubs. Unknown fields are ignored.
func ParseCustomResponse(body []byte, linkedHubs []string) (*CustomResponse, *Failure) {
	if len(body) > dps.MaxMessageBytes {
		return nil, customFailure("the webhook's answer is larger than %d bytes", dps.MaxMessageBytes)
	}
	var raw struct {
		IotHubHostName *string         `json:"iotHubHostName"`
		InitialTwin    json.RawMessage `json:"initialTwin"`
		Payload        json.RawMessage `json:"payload"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, customFailure("the webhook's answer is not a JSON AllocationResponse: %v", err)
	}
	if raw.IotHubHostName == nil || *raw.IotHubHostName == "" {
		return nil, customFailure("the webhook's answer has no iotHubHostName")
	}
	out := &CustomResponse{}
	for _, h := range linkedHubs {
		if strings.EqualFold(h, *raw.IotHubHostName) {
			out.IotHubHostName = h
			break
		}
	}
	if out.IotHubHostName == "" {
		return nil, customFailure("the webhook chose IoT hub %q, which is not one of the linked hubs offered to it (%s)", outbound.Excerpt([]byte(*raw.IotHubHostName), 253), strings.Join(linkedHubs, ", "))
	}
	if !isNull(raw.InitialTwin) {
		t, err := parseTwin(raw.InitialTwin)
		if err != nil {
			return nil, customFailure("the webhook's initialTwin is not valid: %v", err)
		}
		out.InitialTwin = t
	}
	if !isNull(raw.Payload) {
		out.Payload = raw.Payload
	}
	return out, nil
}

// parseTwin accepts {"tags": {...}, "properties": {"desired": {...}}},
// each part optional, each an object.
func parseTwin(b json.RawMessage) (*dps.InitialTwin, error) {
	var t struct {
		Tags       json.RawMessage `json:"tags"`
		Properties json.RawMessage `json:"properties"`
	}
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("not a JSON object")
	}
	out := &dps.InitialTwin{}
	if !isNull(t.Tags) {
		if !isObject(t.Tags) {
			return nil, fmt.Errorf("tags is not a JSON object")
		}
		out.Tags = t.Tags
	}
	if !isNull(t.Properties) {
		var p struct {
			Desired json.RawMessage `json:"desired"`
		}
		if err := json.Unmarshal(t.Properties, &p); err != nil {
			return nil, fmt.Errorf("properties is not a JSON object")
		}
		if !isNull(p.Desired) {
			if !isObject(p.Desired) {
				return nil, fmt.Errorf("properties.desired is not a JSON object")
			}
			out.Properties = &dps.InitialTwinProperties{Desired: p.Desired}
		}
	}
	return out, nil
}

func isNull(b json.RawMessage) bool {
	t := bytes.TrimSpace(b)
	return len(t) == 0 || string(t) == "null"
}

func isObject(b json.RawMessage) bool {
	t := bytes.TrimSpace(b)
	return len(t) > 0 && t[0] == '{'
}

func customFailure(format string, args ...any) *Failure {
	return &Failure{dpserr.CodeCustomAllocation, "Custom allocation failed: " + fmt.Sprintf(format, args...)}
}
