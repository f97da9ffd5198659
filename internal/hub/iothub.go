package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/outbound"
	"github.com/dpsd/dpsd/internal/sas"
)

// APIVersion is the IoT Hub service API version dpsd calls.
const APIVersion = "2021-04-12"

// tokenLifetime is how long a service token dpsd signs stays valid; a token
// is signed for every call, so it only has to outlive one.
const tokenLifetime = time.Hour

// IoTHub is the registry of an Azure IoT hub, reached through its registry
// REST API (docs/protocol.md, "The IoT Hub registry API"):
//
//   - PUT /devices/{id} without If-Match creates a device; the hub answers
//     409 when the device exists, and dpsd then updates it with If-Match: *
//     (which the hub answers 404 when the device is gone, in which case dpsd
//     creates it again).
//   - PATCH /twins/{id} merges tags and desired properties (JSON merge
//     patch); PUT /twins/{id} replaces them. Both with If-Match: *.
//   - GET /twins/{id} reads a twin; DELETE /devices/{id} with If-Match: *
//     deletes a device (404: already gone).
//
// Every call carries Authorization: SharedAccessSignature
// sr={host}&sig=...&se=...&skn={policy}, signed with the policy's key.
type IoTHub struct {
	name    string
	host    string // HostName of the connection string, perhaps with a port
	keyName string
	key     []byte
	keyB64  string
	client  *outbound.Client
	retry   Retry
	now     func() time.Time
}

func parseConnectionString(s string) (*sas.ConnectionString, error) {
	cs, err := sas.ParseConnectionString(s)
	if err != nil {
		return nil, fmt.Errorf("hub connection string: %v", err)
	}
	if cs.SharedAccessKeyName == "" || cs.SharedAccessKey == "" {
		return nil, errors.New("hub connection string needs SharedAccessKeyName and SharedAccessKey (a hub policy with registry write rights)")
	}
	if err := checkHostPort(cs.HostName); err != nil {
		return nil, fmt.Errorf("hub connection string HostName: %v", err)
	}
	return cs, nil
}

// checkHostPort accepts a host name or IP address with an optional port,
// and nothing else (no scheme, path or user information).
func checkHostPort(s string) error {
	u, err := url.Parse("https://" + s)
	if err != nil || u.Host != s || u.Hostname() == "" || u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q is not a host name with an optional port", s)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q has port %q outside 1 to 65535", s, p)
		}
	}
	return nil
}

func newIoTHub(c Config, o Options) (*IoTHub, error) {
	cs, err := parseConnectionString(c.ConnectionString)
	if err != nil {
		return nil, err
	}
	key, err := sas.DecodeKey(cs.SharedAccessKey)
	if err != nil {
		return nil, errors.New("hub connection string SharedAccessKey is not base64")
	}
	name := c.Hub
	if name == "" {
		name = cs.HostName
	}
	return &IoTHub{name: name, host: cs.HostName, keyName: cs.SharedAccessKeyName, key: key, keyB64: cs.SharedAccessKey,
		client: o.Client, retry: o.Retry, now: o.Now}, nil
}

// deviceJSON is the device identity IoT Hub's registry takes.
type deviceJSON struct {
	DeviceID       string                  `json:"deviceId"`
	Status         string                  `json:"status"`
	Authentication *Authentication         `json:"authentication"`
	Capabilities   *dps.DeviceCapabilities `json:"capabilities"`
}

// twinJSON is the part of a twin dpsd writes and reads.
type twinJSON struct {
	Tags       json.RawMessage `json:"tags,omitempty"`
	Properties *twinProperties `json:"properties,omitempty"`
}

type twinProperties struct {
	Desired json.RawMessage `json:"desired,omitempty"`
}

// Apply creates or updates the device, then writes its twin. An update
// replaces the identity's status (enabled), authentication and
// capabilities, as a fresh registration should. When the twin cannot be
// written to a device this call created, the device is deleted again, so
// that the hub does not keep a device dpsd reports as failed.
func (h *IoTHub) Apply(ctx context.Context, a *Assignment) error {
	if err := a.Auth.check(); err != nil {
		return fmt.Errorf("hub %s: device %q: %v", h.name, a.DeviceID, err)
	}
	body, err := json.Marshal(deviceJSON{DeviceID: a.DeviceID, Status: "enabled", Authentication: &a.Auth,
		Capabilities: &dps.DeviceCapabilities{IotEdge: a.IotEdge}})
	if err != nil {
		return err
	}
	secrets := a.Auth.secrets()
	created, err := h.putDevice(ctx, a.DeviceID, body, secrets)
	if err != nil {
		return err
	}
	if err := h.writeTwin(ctx, a, secrets); err != nil {
		if created {
			// Best effort, and bounded even when ctx has expired.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			h.call(rctx, "delete device", a.DeviceID, http.MethodDelete, devicePath(a.DeviceID), "*", nil, nil, http.StatusNotFound)
			cancel()
		}
		return err
	}
	return nil
}

func (h *IoTHub) putDevice(ctx context.Context, id string, body []byte, secrets []string) (created bool, err error) {
	path := devicePath(id)
	for range 2 {
		_, err := h.call(ctx, "create device", id, http.MethodPut, path, "", body, secrets)
		if err == nil {
			return true, nil
		}
		if statusOf(err) != http.StatusConflict {
			return false, err
		}
		_, err = h.call(ctx, "update device", id, http.MethodPut, path, "*", body, secrets)
		if err == nil {
			return false, nil
		}
		if statusOf(err) != http.StatusNotFound {
			return false, err
		}
		// Deleted between the two calls: create it again.
	}
	return false, fmt.Errorf("hub %s: device %q was created and deleted concurrently; try again", h.name, id)
}

func (h *IoTHub) writeTwin(ctx context.Context, a *Assignment, secrets []string) error {
	t := a.Twin
	if t == nil {
		t = &dps.InitialTwin{}
	}
	var desired json.RawMessage
	if t.Properties != nil {
		desired = t.Properties.Desired
	}
	tags := t.Tags
	var body twinJSON
	op, method := "merge twin", http.MethodPatch
	if a.TwinMode == TwinReplace {
		op, method = "replace twin", http.MethodPut
		body.Tags = orEmpty(tags)
		body.Properties = &twinProperties{orEmpty(desired)}
	} else {
		if isEmpty(tags) && isEmpty(desired) {
			return nil
		}
		if !isEmpty(tags) {
			body.Tags = tags
		}
		if !isEmpty(desired) {
			body.Properties = &twinProperties{desired}
		}
	}
	b, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("hub %s: device %q: initial twin is not valid JSON: %v", h.name, a.DeviceID, err)
	}
	_, err = h.call(ctx, op, a.DeviceID, method, twinPath(a.DeviceID), "*", b, secrets)
	return err
}

// Twin reads the device's tags and desired properties, without the hub's
// metadata ($metadata, $version).
func (h *IoTHub) Twin(ctx context.Context, deviceID string) (*dps.InitialTwin, error) {
	resp, err := h.call(ctx, "read twin", deviceID, http.MethodGet, twinPath(deviceID), "", nil, nil, http.StatusNotFound)
	if err != nil || resp.Status == http.StatusNotFound {
		return nil, err
	}
	t, err := parseTwinAnswer(resp.Body)
	if err != nil {
		return nil, &Error{Hub: h.name, Registry: KindAzureIoTHub, Op: "read twin", DeviceID: deviceID, Status: resp.Status,
			Answer: quoteAnswer(resp.Body, nil), Attempts: 1, Err: err}
	}
	return t, nil
}

// parseTwinAnswer reads the tags and desired properties of a twin as the
// hub returns it; nil when it has neither.
func parseTwinAnswer(body []byte) (*dps.InitialTwin, error) {
	var t twinJSON
	if err := json.Unmarshal(body, &t); err != nil {
		return nil, fmt.Errorf("the twin is not valid JSON: %v", err)
	}
	out := &dps.InitialTwin{}
	if !isEmpty(t.Tags) {
		if !isObject(t.Tags) {
			return nil, errors.New("the twin's tags are not a JSON object")
		}
		out.Tags = t.Tags
	}
	if t.Properties != nil && !isEmpty(t.Properties.Desired) {
		if !isObject(t.Properties.Desired) {
			return nil, errors.New("the twin's desired properties are not a JSON object")
		}
		if d := withoutMetadata(t.Properties.Desired); d != nil {
			out.Properties = &dps.InitialTwinProperties{Desired: d}
		}
	}
	if out.Tags == nil && out.Properties == nil {
		return nil, nil
	}
	return out, nil
}

// Remove deletes the device.
func (h *IoTHub) Remove(ctx context.Context, r *Removal) error {
	_, err := h.call(ctx, "delete device", r.DeviceID, http.MethodDelete, devicePath(r.DeviceID), "*", nil, nil, http.StatusNotFound)
	return err
}

// call makes one registry call with retries. A 2xx answer, or one of the
// statuses in also, is returned; anything else becomes an *Error.
func (h *IoTHub) call(ctx context.Context, op, deviceID, method, path, ifMatch string, body []byte, secrets []string, also ...int) (*outbound.Response, error) {
	hdr := http.Header{}
	if body != nil {
		hdr.Set("Content-Type", "application/json; charset=utf-8")
	}
	if ifMatch != "" {
		hdr.Set("If-Match", ifMatch)
	}
	// The token is signed afresh for each attempt, so a long retry never
	// sends an expired one.
	build := func() *outbound.Request {
		hd := hdr.Clone()
		hd.Set("Authorization", sas.New(h.host, h.keyName, h.key, h.now().Add(tokenLifetime), true))
		return &outbound.Request{Method: method, URL: "https://" + h.host + path + "?api-version=" + APIVersion, Header: hd, Body: body}
	}
	resp, n, err := do(ctx, h.client, h.retry, build)
	if err != nil {
		return nil, &Error{Hub: h.name, Registry: KindAzureIoTHub, Op: op, DeviceID: deviceID, Attempts: n, Err: err}
	}
	if resp.Status/100 == 2 || slices.Contains(also, resp.Status) {
		return resp, nil
	}
	return nil, &Error{Hub: h.name, Registry: KindAzureIoTHub, Op: op, DeviceID: deviceID, Status: resp.Status,
		Answer: quoteAnswer(resp.Body, append(secrets, h.keyB64)), Attempts: n}
}

// statusOf is the hub's answer status of a failed call, or 0.
func statusOf(err error) int {
	var he *Error
	if errors.As(err, &he) {
		return he.Status
	}
	return 0
}

func devicePath(id string) string { return "/devices/" + escapeID(id) }
func twinPath(id string) string   { return "/twins/" + escapeID(id) }

// escapeID percent-encodes everything but unreserved characters: device IDs
// may hold characters such as # ? % + that mean something in a URL.
func escapeID(id string) string {
	var b strings.Builder
	for i := 0; i < len(id); i++ {
		c := id[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func isEmpty(j json.RawMessage) bool {
	t := bytes.TrimSpace(j)
	return len(t) == 0 || bytes.Equal(t, []byte("null")) || bytes.Equal(t, []byte("{}"))
}

func isObject(j json.RawMessage) bool {
	t := bytes.TrimSpace(j)
	return len(t) > 0 && t[0] == '{'
}

func orEmpty(j json.RawMessage) json.RawMessage {
	if isEmpty(j) {
		return json.RawMessage("{}")
	}
	return j
}

// withoutMetadata drops the keys IoT Hub adds to desired properties
// ($metadata, $version); user keys never start with '$'.
func withoutMetadata(desired json.RawMessage) json.RawMessage {
	var m map[string]json.RawMessage
	if json.Unmarshal(desired, &m) != nil {
		return nil
	}
	for k := range m {
		if strings.HasPrefix(k, "$") {
			delete(m, k)
		}
	}
	if len(m) == 0 {
		return nil
	}
	b, _ := json.Marshal(m)
	return b
}
