package hub_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/hub"
	"github.com/dpsd/dpsd/internal/hub/hubtest"
	"github.com/dpsd/dpsd/internal/outbound"
	"github.com/dpsd/dpsd/internal/sas"
)

const hubName = "hub-a.azure-devices.net"

// fast retries keep the tests quick; the waits themselves are not tested.
var fast = hub.Retry{Attempts: 4, Base: time.Millisecond, Max: 5 * time.Millisecond}

func newIoTHub(t *testing.T, retry hub.Retry, timeout time.Duration) (*hubtest.IoTHub, hub.Registry) {
	t.Helper()
	h := hubtest.NewIoTHub(t, hubtest.IoTHubOptions{})
	c := h.CA.Client(t, outbound.Options{Version: "9.9", Timeout: timeout})
	reg, err := hub.New(hub.Config{Kind: hub.KindAzureIoTHub, Hub: hubName, ConnectionString: h.ConnectionString()},
		hub.Options{Client: c, Retry: retry})
	if err != nil {
		t.Fatal(err)
	}
	return h, reg
}

func key(b byte) string {
	k := make([]byte, 32)
	for i := range k {
		k[i] = b + byte(i)
	}
	return base64.StdEncoding.EncodeToString(k)
}

func twin(tags, desired string) *dps.InitialTwin {
	t := &dps.InitialTwin{}
	if tags != "" {
		t.Tags = json.RawMessage(tags)
	}
	if desired != "" {
		t.Properties = &dps.InitialTwinProperties{Desired: json.RawMessage(desired)}
	}
	return t
}

// checkCall asserts a call's request line, If-Match and body, and that it
// carried a valid service token for the hub and dpsd's User-Agent.
func checkCall(t *testing.T, h *hubtest.IoTHub, c hubtest.Call, method, path, ifMatch, body string) {
	t.Helper()
	if c.Method != method || c.Path != path {
		t.Errorf("call %s %s, want %s %s", c.Method, c.Path, method, path)
	}
	if c.Query != "api-version="+hub.APIVersion {
		t.Errorf("%s %s: query %q", c.Method, c.Path, c.Query)
	}
	if got := c.Header.Get("If-Match"); got != ifMatch {
		t.Errorf("%s %s: If-Match %q, want %q", c.Method, c.Path, got, ifMatch)
	}
	if body != "" {
		if ct := c.Header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
			t.Errorf("%s %s: Content-Type %q", c.Method, c.Path, ct)
		}
		if string(c.Body) != body {
			t.Errorf("%s %s: body\n got %s\nwant %s", c.Method, c.Path, c.Body, body)
		}
	} else if len(c.Body) != 0 {
		t.Errorf("%s %s: unexpected body %s", c.Method, c.Path, c.Body)
	}
	if ua := c.Header.Get("User-Agent"); ua != "dpsd/9.9" {
		t.Errorf("User-Agent %q", ua)
	}
	tok, err := sas.Parse(c.Header.Get("Authorization"))
	if err != nil {
		t.Fatalf("%s %s: %v", c.Method, c.Path, err)
	}
	if tok.RawResource != strings.ToLower(url.QueryEscape(h.HostName)) || tok.KeyName != hubtest.DefaultPolicy {
		t.Errorf("token sr=%q skn=%q, want sr=%q skn=%q", tok.RawResource, tok.KeyName, url.QueryEscape(h.HostName), hubtest.DefaultPolicy)
	}
	if d := time.Until(tok.Expiry); d < 50*time.Minute || d > time.Hour+time.Minute {
		t.Errorf("token expires in %v, want about an hour", d)
	}
	if c.Status/100 != 2 && c.Note != "" {
		t.Logf("hub refused %s %s: %s", c.Method, c.Path, c.Note)
	}
}

func TestApplyCreatesDeviceByAttestation(t *testing.T) {
	tests := map[string]struct {
		a        hub.Assignment
		wantAuth string // JSON of authentication
	}{
		"symmetric key, individual": {
			a:        hub.Assignment{DeviceID: "sym-1", Attestation: dps.AttestationSymmetricKey, Auth: hub.SASAuth(key(1), key(2))},
			wantAuth: `{"type":"sas","symmetricKey":{"primaryKey":"` + key(1) + `","secondaryKey":"` + key(2) + `"}}`,
		},
		"symmetric key, group-derived keys": {
			a:        hub.Assignment{DeviceID: "group-dev-7", Attestation: dps.AttestationSymmetricKey, Auth: hub.SASAuth(key(3), key(4))},
			wantAuth: `{"type":"sas","symmetricKey":{"primaryKey":"` + key(3) + `","secondaryKey":"` + key(4) + `"}}`,
		},
		"tpm": {
			a:        hub.Assignment{DeviceID: "tpm-1", Attestation: dps.AttestationTPM, Auth: hub.SASAuth(key(5), key(6))},
			wantAuth: `{"type":"sas","symmetricKey":{"primaryKey":"` + key(5) + `","secondaryKey":"` + key(6) + `"}}`,
		},
		"x509 individual, two certificates": {
			a: hub.Assignment{DeviceID: "x509-1", Attestation: dps.AttestationX509,
				Auth: hub.SelfSignedAuth(strings.Repeat("AB", 32), strings.Repeat("CD", 20))},
			wantAuth: `{"type":"selfSigned","x509Thumbprint":{"primaryThumbprint":"` + strings.Repeat("AB", 32) + `","secondaryThumbprint":"` + strings.Repeat("CD", 20) + `"}}`,
		},
		"x509 individual, one certificate": {
			a:        hub.Assignment{DeviceID: "x509-2", Attestation: dps.AttestationX509, Auth: hub.SelfSignedAuth(strings.Repeat("EF", 32), "")},
			wantAuth: `{"type":"selfSigned","x509Thumbprint":{"primaryThumbprint":"` + strings.Repeat("EF", 32) + `"}}`,
		},
		"x509 group, edge device": {
			a:        hub.Assignment{DeviceID: "edge-1", Attestation: dps.AttestationX509, Auth: hub.CAAuth(), IotEdge: true},
			wantAuth: `{"type":"certificateAuthority"}`,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			h, reg := newIoTHub(t, fast, 0)
			a := tc.a
			a.Twin = twin(`{"site":"plant-3"}`, `{"telemetryInterval":30}`)
			if err := reg.Apply(context.Background(), &a); err != nil {
				t.Fatal(err)
			}
			calls := h.Calls()
			if len(calls) != 2 {
				t.Fatalf("%d calls, want PUT device and PATCH twin: %+v", len(calls), calls)
			}
			edge := "false"
			if a.IotEdge {
				edge = "true"
			}
			checkCall(t, h, calls[0], "PUT", "/devices/"+a.DeviceID, "",
				`{"deviceId":"`+a.DeviceID+`","status":"enabled","authentication":`+tc.wantAuth+`,"capabilities":{"iotEdge":`+edge+`}}`)
			checkCall(t, h, calls[1], "PATCH", "/twins/"+a.DeviceID, "*",
				`{"tags":{"site":"plant-3"},"properties":{"desired":{"telemetryInterval":30}}}`)
			d, ok := h.Device(a.DeviceID)
			if !ok {
				t.Fatal("the hub has no device")
			}
			if !reflect.DeepEqual(d.Auth, a.Auth) || d.IotEdge != a.IotEdge || d.Status != "enabled" {
				t.Fatalf("hub holds %+v", d)
			}
			if tags, _ := json.Marshal(d.Tags); string(tags) != `{"site":"plant-3"}` {
				t.Fatalf("tags %s", tags)
			}
		})
	}
}

func TestApplyUpdatesExistingDevice(t *testing.T) {
	h, reg := newIoTHub(t, fast, 0)
	h.PutDevice("dev-1", hub.SASAuth(key(9), key(10)), `{"keep":"me"}`, "")
	a := &hub.Assignment{DeviceID: "dev-1", Auth: hub.SASAuth(key(1), key(2))}
	if err := reg.Apply(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	calls := h.Calls()
	if len(calls) != 2 || calls[0].Status != http.StatusConflict || calls[1].Status != http.StatusOK {
		t.Fatalf("calls %+v, want create (409) then update", calls)
	}
	body := `{"deviceId":"dev-1","status":"enabled","authentication":{"type":"sas","symmetricKey":{"primaryKey":"` + key(1) + `","secondaryKey":"` + key(2) + `"}},"capabilities":{"iotEdge":false}}`
	checkCall(t, h, calls[0], "PUT", "/devices/dev-1", "", body)
	checkCall(t, h, calls[1], "PUT", "/devices/dev-1", "*", body)
	d, _ := h.Device("dev-1")
	if d.Auth.SymmetricKey.PrimaryKey != key(1) {
		t.Fatal("the device keeps its old key")
	}
	if d.Tags["keep"] != "me" {
		t.Fatal("a nil twin with TwinMerge must leave the twin alone")
	}
}

func TestTwinMergeAndReplace(t *testing.T) {
	h, reg := newIoTHub(t, fast, 0)
	h.PutDevice("dev-1", hub.CAAuth(), `{"a":1,"b":{"x":1,"y":2}}`, `{"p":1,"q":2}`)
	ctx := context.Background()
	apply := func(mode hub.TwinMode, tw *dps.InitialTwin) {
		t.Helper()
		h.ResetCalls()
		if err := reg.Apply(ctx, &hub.Assignment{DeviceID: "dev-1", Auth: hub.CAAuth(), Twin: tw, TwinMode: mode}); err != nil {
			t.Fatal(err)
		}
	}
	state := func() string {
		d, _ := h.Device("dev-1")
		b, _ := json.Marshal(map[string]any{"tags": d.Tags, "desired": d.Desired})
		return string(b)
	}

	apply(hub.TwinMerge, twin(`{"b":{"y":null,"z":3},"c":true}`, `{"q":null,"r":"new"}`))
	if got, want := state(), `{"desired":{"p":1,"r":"new"},"tags":{"a":1,"b":{"x":1,"z":3},"c":true}}`; got != want {
		t.Fatalf("after merge: %s, want %s", got, want)
	}
	if c := h.Calls(); len(c) != 3 || c[2].Method != "PATCH" {
		t.Fatalf("merge calls: %+v", c)
	}

	apply(hub.TwinReplace, twin(`{"only":"this"}`, ""))
	if got, want := state(), `{"desired":{},"tags":{"only":"this"}}`; got != want {
		t.Fatalf("after replace: %s, want %s", got, want)
	}
	c := h.Calls()
	checkCall(t, h, c[len(c)-1], "PUT", "/twins/dev-1", "*", `{"tags":{"only":"this"},"properties":{"desired":{}}}`)

	apply(hub.TwinReplace, nil)
	if got, want := state(), `{"desired":{},"tags":{}}`; got != want {
		t.Fatalf("after replace with nil: %s, want %s", got, want)
	}
	c = h.Calls()
	checkCall(t, h, c[len(c)-1], "PUT", "/twins/dev-1", "*", `{"tags":{},"properties":{"desired":{}}}`)

	// An empty twin in merge mode writes nothing.
	apply(hub.TwinMerge, twin(`{}`, `null`))
	if c := h.Calls(); len(c) != 2 || c[1].Method != "PUT" || !strings.HasPrefix(c[1].Path, "/devices/") {
		t.Fatalf("an empty merge made calls %+v", c)
	}
}

func TestReadTwin(t *testing.T) {
	h, reg := newIoTHub(t, fast, 0)
	h.PutDevice("with-twin", hub.CAAuth(), `{"site":"a"}`, `{"mode":"eco","n":1.50}`)
	h.PutDevice("bare", hub.CAAuth(), "", "")
	ctx := context.Background()

	tw, err := reg.Twin(ctx, "with-twin")
	if err != nil {
		t.Fatal(err)
	}
	if tw == nil || string(tw.Tags) != `{"site":"a"}` || tw.Properties == nil || string(tw.Properties.Desired) != `{"mode":"eco","n":1.50}` {
		t.Fatalf("twin %+v", tw)
	}
	calls := h.Calls()
	checkCall(t, h, calls[0], "GET", "/twins/with-twin", "", "")
	// The hub answers with $metadata and $version; they are not user data.
	if !strings.Contains(string(mustGet(t, h, "with-twin")), "$metadata") {
		t.Fatal("the test hub no longer sends $metadata; this test proves nothing")
	}
	for _, id := range []string{"bare", "absent"} {
		if tw, err := reg.Twin(ctx, id); err != nil || tw != nil {
			t.Fatalf("Twin(%s) = %+v, %v; want nil, nil", id, tw, err)
		}
	}
}

// mustGet reads a twin as raw JSON, through the registry's own client.
func mustGet(t *testing.T, h *hubtest.IoTHub, id string) []byte {
	t.Helper()
	c := h.CA.Client(t, outbound.Options{})
	cs, _ := sas.ParseConnectionString(h.ConnectionString())
	k, _ := sas.DecodeKey(cs.SharedAccessKey)
	resp, err := c.Do(context.Background(), &outbound.Request{Method: "GET", URL: "https://" + h.HostName + "/twins/" + id + "?api-version=" + hub.APIVersion,
		Header: http.Header{"Authorization": {sas.New(h.HostName, cs.SharedAccessKeyName, k, time.Now().Add(time.Minute), true)}}})
	if err != nil || resp.Status != 200 {
		t.Fatalf("GET twin: %v %v", resp, err)
	}
	return resp.Body
}

func TestRemove(t *testing.T) {
	h, reg := newIoTHub(t, fast, 0)
	h.PutDevice("dev-1", hub.CAAuth(), "", "")
	ctx := context.Background()
	if err := reg.Remove(ctx, &hub.Removal{DeviceID: "dev-1"}); err != nil {
		t.Fatal(err)
	}
	checkCall(t, h, h.Calls()[0], "DELETE", "/devices/dev-1", "*", "")
	if _, ok := h.Device("dev-1"); ok {
		t.Fatal("the device is still there")
	}
	if err := reg.Remove(ctx, &hub.Removal{DeviceID: "dev-1"}); err != nil {
		t.Fatalf("removing an absent device: %v", err)
	}
	if c := h.Calls(); len(c) != 2 || c[1].Status != http.StatusNotFound {
		t.Fatalf("calls %+v", c)
	}
}

func TestDeviceIDIsEscaped(t *testing.T) {
	h, reg := newIoTHub(t, fast, 0)
	id := "line#3?unit=7+x%"
	if err := reg.Apply(context.Background(), &hub.Assignment{DeviceID: id, Auth: hub.CAAuth()}); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.Device(id); !ok {
		t.Fatalf("hub holds %v, not %q", h.DeviceIDs(), id)
	}
	if c := h.Calls()[0]; c.Path != "/devices/"+id || c.Query != "api-version="+hub.APIVersion {
		t.Fatalf("path %q query %q", c.Path, c.Query)
	}
}

func asHubError(t *testing.T, err error) *hub.Error {
	t.Helper()
	var he *hub.Error
	if !errors.As(err, &he) {
		t.Fatalf("err = %v (%T), want *hub.Error", err, err)
	}
	return he
}

func TestRetriesThenSuccess(t *testing.T) {
	for _, status := range []int{http.StatusServiceUnavailable, http.StatusInternalServerError, http.StatusTooManyRequests} {
		h, reg := newIoTHub(t, fast, 0)
		h.FailNext(2, status)
		if err := reg.Apply(context.Background(), &hub.Assignment{DeviceID: "dev-1", Auth: hub.CAAuth(), Twin: twin(`{"a":1}`, "")}); err != nil {
			t.Fatalf("%d twice, then fine: %v", status, err)
		}
		var got []int
		for _, c := range h.Calls() {
			got = append(got, c.Status)
		}
		if want := []int{status, status, 200, 200}; !reflect.DeepEqual(got, want) {
			t.Fatalf("statuses %v, want %v", got, want)
		}
	}
}

func TestRetriesExhausted(t *testing.T) {
	h, reg := newIoTHub(t, hub.Retry{Attempts: 3, Base: time.Millisecond, Max: time.Millisecond}, 0)
	h.FailNext(100, http.StatusInternalServerError)
	err := reg.Apply(context.Background(), &hub.Assignment{DeviceID: "dev-1", Auth: hub.SASAuth(key(1), key(2))})
	he := asHubError(t, err)
	if he.Status != 500 || he.Attempts != 3 || he.Unauthorized() || he.Timeout() || he.Hub != hubName || he.Op != "create device" {
		t.Fatalf("error %+v", he)
	}
	if n := len(h.Calls()); n != 3 {
		t.Fatalf("%d calls, want 3", n)
	}
	msg := err.Error()
	for _, want := range []string{"IoT hub " + hubName, "500 Internal Server Error", `create device of device "dev-1"`, "ErrorCode:ServerError", "(3 attempts)"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
}

func TestNoRetryOnClientError(t *testing.T) {
	h, reg := newIoTHub(t, fast, 0)
	err := reg.Apply(context.Background(), &hub.Assignment{DeviceID: "dev-1", Auth: hub.SelfSignedAuth("not-hex", "")})
	he := asHubError(t, err)
	if he.Status != 400 || he.Attempts != 1 || len(h.Calls()) != 1 {
		t.Fatalf("error %+v after %d calls", he, len(h.Calls()))
	}
	if !strings.Contains(he.Answer, "ErrorCode:ArgumentInvalid") {
		t.Fatalf("answer %q", he.Answer)
	}
}

func TestHubRefusesCredentials(t *testing.T) {
	tests := map[string]struct {
		setup func(h *hubtest.IoTHub)
		note  string
	}{
		"key rotated":    {setup: func(h *hubtest.IoTHub) { h.SetPolicyKey(hubtest.DefaultPolicy, nil) }, note: "does not verify"},
		"policy unknown": {setup: func(h *hubtest.IoTHub) { h.SetPolicyKey("other", nil) }, note: "names no policy"},
		"every key":      {setup: func(h *hubtest.IoTHub) { h.RefuseKeys(true) }, note: "refusing every key"},
		"hub of another": {setup: func(h *hubtest.IoTHub) { h.HostName = "hub-b.azure-devices.net" }, note: "does not name hub"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			h := hubtest.NewIoTHub(t, hubtest.IoTHubOptions{})
			cs := h.ConnectionString()
			if name == "policy unknown" {
				cs = strings.Replace(cs, "SharedAccessKeyName="+hubtest.DefaultPolicy, "SharedAccessKeyName=registryReadWrite", 1)
			}
			reg, err := hub.New(hub.Config{Kind: hub.KindAzureIoTHub, Hub: hubName, ConnectionString: cs},
				hub.Options{Client: h.CA.Client(t, outbound.Options{}), Retry: fast})
			if err != nil {
				t.Fatal(err)
			}
			tc.setup(h)
			a := &hub.Assignment{DeviceID: "dev-1", Auth: hub.SASAuth(key(1), key(2))}
			err = reg.Apply(context.Background(), a)
			he := asHubError(t, err)
			if !he.Unauthorized() || he.Status != 401 || he.Attempts != 1 {
				t.Fatalf("error %+v", he)
			}
			calls := h.Calls()
			if len(calls) != 1 || !strings.Contains(calls[0].Note, tc.note) {
				t.Fatalf("calls %+v, want one refused with %q", calls, tc.note)
			}
			msg := err.Error()
			if !strings.Contains(msg, "refused dpsd's credentials") || !strings.Contains(msg, "IotHubUnauthorizedAccess") {
				t.Fatalf("message %q", msg)
			}
			pcs, _ := sas.ParseConnectionString(cs)
			for _, secret := range []string{pcs.SharedAccessKey, key(1), key(2)} {
				if strings.Contains(msg, secret) {
					t.Fatal("the message contains a key")
				}
			}
		})
	}
}

func TestHubTimesOut(t *testing.T) {
	h, reg := newIoTHub(t, hub.Retry{Attempts: 2, Base: time.Millisecond, Max: time.Millisecond}, 50*time.Millisecond)
	h.SetDelay(time.Hour)
	err := reg.Apply(context.Background(), &hub.Assignment{DeviceID: "dev-1", Auth: hub.CAAuth()})
	he := asHubError(t, err)
	if !he.Timeout() || he.Status != 0 || he.Attempts != 2 || he.Unauthorized() {
		t.Fatalf("error %+v", he)
	}
	if !strings.Contains(err.Error(), "did not answer") || !strings.Contains(err.Error(), "(2 attempts)") {
		t.Fatalf("message %q", err)
	}
}

func TestContextBoundsRetries(t *testing.T) {
	h, reg := newIoTHub(t, hub.Retry{Attempts: 1000, Base: time.Millisecond, Max: time.Millisecond}, 0)
	h.FailNext(1<<30, http.StatusServiceUnavailable)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := reg.Apply(ctx, &hub.Assignment{DeviceID: "dev-1", Auth: hub.CAAuth()})
	he := asHubError(t, err)
	if he.Status != 503 && !he.Timeout() {
		t.Fatalf("error %+v", he)
	}
	if he.Attempts >= 1000 {
		t.Fatal("the context's deadline did not stop the retries")
	}
}

func TestTwinFailureRemovesCreatedDevice(t *testing.T) {
	h, reg := newIoTHub(t, fast, 0)
	bad := twin(`{"$reserved":1}`, "")
	err := reg.Apply(context.Background(), &hub.Assignment{DeviceID: "new", Auth: hub.CAAuth(), Twin: bad})
	if he := asHubError(t, err); he.Status != 400 || he.Op != "merge twin" {
		t.Fatalf("error %+v", he)
	}
	var got []string
	for _, c := range h.Calls() {
		got = append(got, c.Method+" "+c.Path)
	}
	if want := []string{"PUT /devices/new", "PATCH /twins/new", "DELETE /devices/new"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("calls %v, want %v", got, want)
	}
	if _, ok := h.Device("new"); ok {
		t.Fatal("the device dpsd created stays behind")
	}

	// A device that existed before is updated, not removed.
	h.PutDevice("old", hub.CAAuth(), "", "")
	reg.Apply(context.Background(), &hub.Assignment{DeviceID: "old", Auth: hub.CAAuth(), Twin: bad})
	if _, ok := h.Device("old"); !ok {
		t.Fatal("a device that existed before was removed")
	}
}

func TestApplyRefusesIncompleteAuthentication(t *testing.T) {
	h, reg := newIoTHub(t, fast, 0)
	for _, a := range []hub.Authentication{{Type: hub.AuthSAS}, {Type: hub.AuthSelfSigned}, {Type: "password"}} {
		if err := reg.Apply(context.Background(), &hub.Assignment{DeviceID: "d", Auth: a}); err == nil {
			t.Errorf("Apply with %+v succeeded", a)
		}
	}
	if n := len(h.Calls()); n != 0 {
		t.Fatalf("%d calls reached the hub", n)
	}
}
