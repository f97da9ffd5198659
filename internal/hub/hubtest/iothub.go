package hubtest

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/hub"
	"github.com/dpsd/dpsd/internal/sas"
)

// IoTHubOptions configure an IoTHub.
type IoTHubOptions struct {
	Options
	// HostName is the hub's name in its connection string and in the
	// tokens it accepts (default localhost:<port>).
	HostName string
}

// DefaultPolicy is the policy an IoTHub starts with.
const DefaultPolicy = "iothubowner"

// IoTHub implements the IoT Hub registry endpoints dpsd calls, with state:
// PUT/GET/DELETE /devices/{id} and GET/PATCH/PUT /twins/{id}. It checks
// every request's service token as IoT Hub does (sr names this hub, not
// expired, skn names one of its policies, signature by that policy's key)
// and answers 401 with IoT Hub's error body otherwise; it requires an
// api-version; it keeps etags, refuses a create of an existing device with
// 409 and an update of a missing one with 404, and honours If-Match.
type IoTHub struct {
	*Server
	HostName string

	mu       sync.Mutex
	policies map[string][]byte
	refuse   bool
	devices  map[string]*Device
	counter  uint64
}

// Device is a device identity and its twin as the hub keeps them.
type Device struct {
	ID           string
	GenerationID string
	Etag         string
	Status       string
	Auth         hub.Authentication
	IotEdge      bool

	TwinEtag       string
	TwinVersion    int
	Tags           map[string]any
	Desired        map[string]any
	DesiredVersion int
}

// NewIoTHub starts a hub with the policy DefaultPolicy and a random key.
func NewIoTHub(t testing.TB, o IoTHubOptions) *IoTHub {
	t.Helper()
	h := &IoTHub{policies: map[string][]byte{}, devices: map[string]*Device{}}
	h.policies[DefaultPolicy] = randomKey()
	h.Server = start(t, o.Options, h.serve, func(status int) []byte {
		code := "ServerError"
		if status == http.StatusTooManyRequests {
			code = "ThrottlingException"
		}
		return errorBody(code, "failed on purpose")
	})
	h.HostName = o.HostName
	if h.HostName == "" {
		h.HostName = "localhost:" + h.Addr[strings.LastIndex(h.Addr, ":")+1:]
	}
	return h
}

func randomKey() []byte {
	k := make([]byte, 32)
	rand.Read(k)
	return k
}

// ConnectionString is the connection string of the DefaultPolicy.
func (h *IoTHub) ConnectionString() string { return h.PolicyConnectionString(DefaultPolicy) }

// PolicyConnectionString is the connection string of a policy.
func (h *IoTHub) PolicyConnectionString(policy string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return (&sas.ConnectionString{HostName: h.HostName, SharedAccessKeyName: policy,
		SharedAccessKey: base64.StdEncoding.EncodeToString(h.policies[policy])}).String()
}

// SetPolicyKey adds a policy or gives it a new key (nil: a random one), as
// an operator rotating a key does: tokens signed with the old key fail.
func (h *IoTHub) SetPolicyKey(policy string, key []byte) {
	if key == nil {
		key = randomKey()
	}
	h.mu.Lock()
	h.policies[policy] = key
	h.mu.Unlock()
}

// RefuseKeys makes the hub answer 401 to every request (true) or check
// tokens again (false).
func (h *IoTHub) RefuseKeys(refuse bool) {
	h.mu.Lock()
	h.refuse = refuse
	h.mu.Unlock()
}

// Device returns a copy of a device, by exact ID.
func (h *IoTHub) Device(id string) (Device, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	d, ok := h.devices[id]
	if !ok {
		return Device{}, false
	}
	c := *d
	c.Tags, c.Desired = clone(d.Tags), clone(d.Desired)
	return c, true
}

// DeviceIDs lists the devices the hub holds.
func (h *IoTHub) DeviceIDs() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var ids []string
	for id := range h.devices {
		ids = append(ids, id)
	}
	return ids
}

// PutDevice stores a device as it is, e.g. one with a twin a test wants
// migrated; tags and desired are JSON objects or "".
func (h *IoTHub) PutDevice(id string, auth hub.Authentication, tags, desired string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	d := &Device{ID: id, GenerationID: h.nextEtag(), Etag: h.nextEtag(), Status: "enabled", Auth: auth,
		TwinEtag: h.nextTwinEtag(), TwinVersion: 1, DesiredVersion: 1}
	d.Tags, _ = decodeObject([]byte(tags))
	d.Desired, _ = decodeObject([]byte(desired))
	h.devices[id] = d
}

func (h *IoTHub) nextEtag() string {
	h.counter++
	return base64.StdEncoding.EncodeToString([]byte(strconv.FormatUint(h.counter, 10)))
}

func (h *IoTHub) nextTwinEtag() string {
	h.counter++
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], h.counter)
	return base64.StdEncoding.EncodeToString(b[:])
}

var apiVersionRE = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}(-preview)?$`)

func (h *IoTHub) serve(w http.ResponseWriter, r *http.Request, body []byte) string {
	if note := h.authorize(r); note != "" {
		w.Header().Set("iothub-errorcode", "IotHubUnauthorizedAccess")
		writeJSON(w, http.StatusUnauthorized, errorBody("IotHubUnauthorizedAccess", "Unauthorized"))
		return note
	}
	if v := r.URL.Query().Get("api-version"); !apiVersionRE.MatchString(v) {
		return hubError(w, http.StatusBadRequest, "InvalidProtocolVersion", fmt.Sprintf("api-version %q is missing or not valid", v))
	}
	kind, id, ok := splitPath(r.URL.EscapedPath())
	if !ok {
		return hubError(w, http.StatusNotFound, "NotFound", "no such resource "+r.URL.Path)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	switch kind + " " + r.Method {
	case "devices PUT":
		return h.putDevice(w, r, id, body)
	case "devices GET":
		if d := h.devices[id]; d != nil {
			writeJSON(w, http.StatusOK, deviceView(d))
			return ""
		}
		return deviceNotFound(w, id)
	case "devices DELETE":
		d := h.devices[id]
		if d == nil {
			return deviceNotFound(w, id)
		}
		if !etagMatches(r, d.Etag) {
			return hubError(w, http.StatusPreconditionFailed, "PreconditionFailed", "If-Match does not match the device's etag")
		}
		delete(h.devices, id)
		w.WriteHeader(http.StatusNoContent)
		return ""
	case "twins GET":
		if d := h.devices[id]; d != nil {
			writeJSON(w, http.StatusOK, twinView(d))
			return ""
		}
		return deviceNotFound(w, id)
	case "twins PATCH", "twins PUT":
		return h.writeTwin(w, r, id, body)
	}
	return hubError(w, http.StatusMethodNotAllowed, "MethodNotAllowed", r.Method+" is not allowed on "+kind)
}

// authorize checks the service token; it returns why it refuses, or "".
func (h *IoTHub) authorize(r *http.Request) string {
	h.mu.Lock()
	refuse := h.refuse
	h.mu.Unlock()
	if refuse {
		return "refusing every key (RefuseKeys)"
	}
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return "no Authorization header"
	}
	tok, err := sas.Parse(auth)
	if err != nil {
		return err.Error()
	}
	hub := h.HostName
	if host, _, err := net.SplitHostPort(hub); err == nil {
		hub = host
	}
	if err := tok.CheckService(func(host string) bool { return strings.EqualFold(host, hub) }, r.URL.Path); err != nil {
		return fmt.Sprintf("token sr %q does not name hub %s: %v", tok.Resource, h.HostName, err)
	}
	if tok.Expired(time.Now()) {
		return "token expired at " + tok.Expiry.Format(time.RFC3339)
	}
	h.mu.Lock()
	key, ok := h.policies[tok.KeyName]
	h.mu.Unlock()
	if !ok {
		return fmt.Sprintf("token skn %q names no policy of the hub", tok.KeyName)
	}
	if !tok.Verify(key) {
		return fmt.Sprintf("token signature does not verify with the key of policy %q", tok.KeyName)
	}
	return ""
}

func splitPath(escaped string) (kind, id string, ok bool) {
	parts := strings.Split(strings.TrimPrefix(escaped, "/"), "/")
	if len(parts) != 2 || parts[0] != "devices" && parts[0] != "twins" || parts[1] == "" {
		return "", "", false
	}
	id, err := url.PathUnescape(parts[1])
	return parts[0], id, err == nil
}

var deviceIDRE = regexp.MustCompile(`^[A-Za-z0-9\-:.+%_#*?!(),=@;$']{1,128}$`)

// deviceInput is the device identity a client sends.
type deviceInput struct {
	DeviceID       string              `json:"deviceId"`
	Status         string              `json:"status"`
	Authentication *hub.Authentication `json:"authentication"`
	Capabilities   *struct {
		IotEdge bool `json:"iotEdge"`
	} `json:"capabilities"`
}

func (h *IoTHub) putDevice(w http.ResponseWriter, r *http.Request, id string, body []byte) string {
	var in deviceInput
	if err := json.Unmarshal(body, &in); err != nil {
		return hubError(w, http.StatusBadRequest, "ArgumentInvalid", "the body is not a device: "+err.Error())
	}
	if !deviceIDRE.MatchString(id) {
		return hubError(w, http.StatusBadRequest, "ArgumentInvalid", fmt.Sprintf("device ID %q is not valid", id))
	}
	if in.DeviceID != id {
		return hubError(w, http.StatusBadRequest, "ArgumentInvalid", fmt.Sprintf("deviceId %q in the body does not match %q in the URL", in.DeviceID, id))
	}
	switch in.Status {
	case "", "enabled", "disabled":
	default:
		return hubError(w, http.StatusBadRequest, "ArgumentInvalid", fmt.Sprintf("status %q is not enabled or disabled", in.Status))
	}
	auth, msg := checkAuth(in.Authentication)
	if msg != "" {
		return hubError(w, http.StatusBadRequest, "ArgumentInvalid", msg)
	}
	d := h.devices[id]
	switch ifMatch := r.Header.Get("If-Match"); {
	case ifMatch == "" && d != nil:
		return hubError(w, http.StatusConflict, "DeviceAlreadyExists", fmt.Sprintf("A device with ID '%s' is already registered.", id))
	case ifMatch != "" && d == nil:
		return deviceNotFound(w, id)
	case d != nil && !etagMatches(r, d.Etag):
		return hubError(w, http.StatusPreconditionFailed, "PreconditionFailed", "If-Match does not match the device's etag")
	}
	if d == nil {
		d = &Device{ID: id, GenerationID: h.nextEtag(), TwinEtag: h.nextTwinEtag(), TwinVersion: 1, DesiredVersion: 1}
		h.devices[id] = d
	}
	d.Etag = h.nextEtag()
	d.Status = in.Status
	if d.Status == "" {
		d.Status = "enabled"
	}
	d.Auth = auth
	d.IotEdge = in.Capabilities != nil && in.Capabilities.IotEdge
	writeJSON(w, http.StatusOK, deviceView(d))
	return ""
}

var hexRE = regexp.MustCompile(`^([0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})$`)

// checkAuth validates an authentication mechanism as the hub does, and
// fills in keys the client left out.
func checkAuth(a *hub.Authentication) (hub.Authentication, string) {
	if a == nil {
		a = &hub.Authentication{Type: hub.AuthSAS}
	}
	out := hub.Authentication{Type: a.Type}
	hasKeys := a.SymmetricKey != nil && (a.SymmetricKey.PrimaryKey != "" || a.SymmetricKey.SecondaryKey != "")
	hasPrints := a.X509Thumbprint != nil && (a.X509Thumbprint.PrimaryThumbprint != "" || a.X509Thumbprint.SecondaryThumbprint != "")
	switch a.Type {
	case hub.AuthSAS:
		if hasPrints {
			return out, "sas authentication takes no thumbprints"
		}
		if !hasKeys {
			out.SymmetricKey = &hub.SymmetricKey{PrimaryKey: sas.NewKey(32), SecondaryKey: sas.NewKey(32)}
			return out, ""
		}
		for _, k := range []string{a.SymmetricKey.PrimaryKey, a.SymmetricKey.SecondaryKey} {
			b, err := base64.StdEncoding.DecodeString(k)
			if err != nil || len(b) < 16 || len(b) > 64 {
				return out, "both symmetric keys must be base64 keys of 16 to 64 bytes"
			}
		}
		out.SymmetricKey = &hub.SymmetricKey{PrimaryKey: a.SymmetricKey.PrimaryKey, SecondaryKey: a.SymmetricKey.SecondaryKey}
	case hub.AuthSelfSigned:
		if hasKeys {
			return out, "selfSigned authentication takes no symmetric keys"
		}
		if !hasPrints || !hexRE.MatchString(a.X509Thumbprint.PrimaryThumbprint) {
			return out, "selfSigned authentication needs a primary thumbprint of 40 or 64 hex digits"
		}
		if s := a.X509Thumbprint.SecondaryThumbprint; s != "" && !hexRE.MatchString(s) {
			return out, "the secondary thumbprint is not 40 or 64 hex digits"
		}
		out.X509Thumbprint = &hub.X509Thumbprint{PrimaryThumbprint: a.X509Thumbprint.PrimaryThumbprint, SecondaryThumbprint: a.X509Thumbprint.SecondaryThumbprint}
	case hub.AuthCertificateAuthority:
		if hasKeys || hasPrints {
			return out, "certificateAuthority authentication takes no keys or thumbprints"
		}
	default:
		return out, fmt.Sprintf("authentication type %q is not sas, selfSigned or certificateAuthority", a.Type)
	}
	return out, ""
}

// twinInput is the part of a twin a service may write.
type twinInput struct {
	Tags       map[string]any `json:"tags"`
	Properties *struct {
		Desired  map[string]any  `json:"desired"`
		Reported json.RawMessage `json:"reported"`
	} `json:"properties"`
}

func (h *IoTHub) writeTwin(w http.ResponseWriter, r *http.Request, id string, body []byte) string {
	d := h.devices[id]
	if d == nil {
		return deviceNotFound(w, id)
	}
	if !etagMatches(r, d.TwinEtag) {
		return hubError(w, http.StatusPreconditionFailed, "PreconditionFailed", "If-Match does not match the twin's etag")
	}
	var in twinInput
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&in); err != nil {
		return hubError(w, http.StatusBadRequest, "ArgumentInvalid", "the body is not a twin: "+err.Error())
	}
	var desired map[string]any
	if in.Properties != nil {
		if len(in.Properties.Reported) > 0 {
			return hubError(w, http.StatusBadRequest, "ArgumentInvalid", "reported properties are written by the device, not the service")
		}
		desired = in.Properties.Desired
	}
	for _, m := range []map[string]any{in.Tags, desired} {
		if k := dollarKey(m); k != "" {
			return hubError(w, http.StatusBadRequest, "ArgumentInvalid", fmt.Sprintf("property name %q starts with '$'", k))
		}
	}
	if r.Method == http.MethodPut {
		d.Tags, d.Desired = clone(in.Tags), clone(desired)
		d.DesiredVersion++
	} else {
		if in.Tags != nil {
			d.Tags = mergePatch(d.Tags, in.Tags)
		}
		if desired != nil {
			d.Desired = mergePatch(d.Desired, desired)
			d.DesiredVersion++
		}
	}
	d.TwinVersion++
	d.TwinEtag = h.nextTwinEtag()
	writeJSON(w, http.StatusOK, twinView(d))
	return ""
}

// mergePatch applies a JSON merge patch (RFC 7386) of objects.
func mergePatch(target, patch map[string]any) map[string]any {
	if target == nil {
		target = map[string]any{}
	}
	for k, v := range patch {
		switch pv := v.(type) {
		case nil:
			delete(target, k)
		case map[string]any:
			tv, _ := target[k].(map[string]any)
			target[k] = mergePatch(tv, pv)
		default:
			target[k] = v
		}
	}
	return target
}

func dollarKey(m map[string]any) string {
	for k, v := range m {
		if strings.HasPrefix(k, "$") {
			return k
		}
		if sub, ok := v.(map[string]any); ok {
			if d := dollarKey(sub); d != "" {
				return d
			}
		}
	}
	return ""
}

func clone(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	b, _ := json.Marshal(m)
	out, _ := decodeObject(b)
	return out
}

func decodeObject(b []byte) (map[string]any, error) {
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	err := dec.Decode(&m)
	return m, err
}

// etagMatches applies If-Match: absent or * matches; otherwise the etag,
// quoted or not.
func etagMatches(r *http.Request, etag string) bool {
	m := r.Header.Get("If-Match")
	return m == "" || m == "*" || strings.Trim(m, `"`) == etag
}

const zeroTime = "0001-01-01T00:00:00Z"

func deviceView(d *Device) map[string]any {
	return map[string]any{
		"deviceId": d.ID, "generationId": d.GenerationID, "etag": d.Etag,
		"connectionState": "Disconnected", "status": d.Status, "statusReason": nil,
		"connectionStateUpdatedTime": zeroTime, "statusUpdatedTime": zeroTime, "lastActivityTime": zeroTime,
		"cloudToDeviceMessageCount": 0, "authentication": d.Auth,
		"capabilities": map[string]bool{"iotEdge": d.IotEdge},
	}
}

func twinView(d *Device) map[string]any {
	now := time.Now().UTC().Format(time.RFC3339Nano)
	desired := clone(d.Desired)
	if desired == nil {
		desired = map[string]any{}
	}
	desired["$metadata"] = map[string]any{"$lastUpdated": now}
	desired["$version"] = d.DesiredVersion
	v := map[string]any{
		"deviceId": d.ID, "etag": d.TwinEtag, "deviceEtag": d.Etag, "status": d.Status,
		"statusUpdateTime": zeroTime, "connectionState": "Disconnected", "lastActivityTime": zeroTime,
		"cloudToDeviceMessageCount": 0, "authenticationType": d.Auth.Type,
		"modelId": "", "version": d.TwinVersion,
		"x509Thumbprint": map[string]any{"primaryThumbprint": nil, "secondaryThumbprint": nil},
		"properties": map[string]any{
			"desired":  desired,
			"reported": map[string]any{"$metadata": map[string]any{"$lastUpdated": now}, "$version": 1},
		},
		"capabilities": map[string]bool{"iotEdge": d.IotEdge},
	}
	if len(d.Tags) > 0 {
		v["tags"] = d.Tags
	}
	return v
}

// errorBody is IoT Hub's error body.
func errorBody(code, message string) []byte {
	var id [16]byte
	rand.Read(id[:])
	b, _ := json.Marshal(map[string]string{
		"Message":          "ErrorCode:" + code + ";" + message,
		"ExceptionMessage": "Tracking ID:" + hex.EncodeToString(id[:]) + "-G:0-TimeStamp:" + time.Now().UTC().Format("01/02/2006 15:04:05"),
	})
	return b
}

func hubError(w http.ResponseWriter, status int, code, message string) string {
	w.Header().Set("iothub-errorcode", code)
	writeJSON(w, status, errorBody(code, message))
	return code + ": " + message
}

func deviceNotFound(w http.ResponseWriter, id string) string {
	return hubError(w, http.StatusNotFound, "DeviceNotFound", fmt.Sprintf("Device %s not found on IoT hub.", id))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, ok := v.([]byte)
	if !ok {
		b, _ = json.Marshal(v)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	w.Write(b)
}
