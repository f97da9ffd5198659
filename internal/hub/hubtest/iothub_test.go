package hubtest

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/hub"
	"github.com/dpsd/dpsd/internal/outbound"
	"github.com/dpsd/dpsd/internal/sas"
)

// The IoTHub double is exercised through the hub package's client; these
// tests cover the checks that client never fails on purpose.
func TestIoTHubChecks(t *testing.T) {
	h := NewIoTHub(t, IoTHubOptions{})
	h.PutDevice("dev-1", hub.CAAuth(), `{"a":1}`, "")
	c := h.CA.Client(t, outbound.Options{})
	cs, _ := sas.ParseConnectionString(h.ConnectionString())
	k, _ := sas.DecodeKey(cs.SharedAccessKey)
	token := func(expiry time.Time) string { return sas.New(h.HostName, DefaultPolicy, k, expiry, true) }
	valid := token(time.Now().Add(time.Minute))

	tests := map[string]struct {
		method, path, query, auth, ifMatch, body string
		status                                   int
		code                                     string // in the error body
	}{
		"no token":                 {method: "GET", path: "/devices/dev-1", status: 401, code: "IotHubUnauthorizedAccess"},
		"expired token":            {method: "GET", path: "/devices/dev-1", auth: token(time.Now().Add(-time.Second)), status: 401, code: "IotHubUnauthorizedAccess"},
		"not a token":              {method: "GET", path: "/devices/dev-1", auth: "Bearer x", status: 401, code: "IotHubUnauthorizedAccess"},
		"no api-version":           {method: "GET", path: "/devices/dev-1", query: "-", status: 400, code: "InvalidProtocolVersion"},
		"get device":               {method: "GET", path: "/devices/dev-1", status: 200},
		"get absent device":        {method: "GET", path: "/devices/nope", status: 404, code: "DeviceNotFound"},
		"create existing":          {method: "PUT", path: "/devices/dev-1", body: `{"deviceId":"dev-1"}`, status: 409, code: "DeviceAlreadyExists"},
		"update absent":            {method: "PUT", path: "/devices/nope", ifMatch: "*", body: `{"deviceId":"nope"}`, status: 404, code: "DeviceNotFound"},
		"update with a stale etag": {method: "PUT", path: "/devices/dev-1", ifMatch: `"stale"`, body: `{"deviceId":"dev-1"}`, status: 412, code: "PreconditionFailed"},
		"device ID mismatch":       {method: "PUT", path: "/devices/new", body: `{"deviceId":"other"}`, status: 400, code: "ArgumentInvalid"},
		"short key":                {method: "PUT", path: "/devices/new", body: `{"deviceId":"new","authentication":{"type":"sas","symmetricKey":{"primaryKey":"c2hvcnQ=","secondaryKey":"c2hvcnQ="}}}`, status: 400, code: "ArgumentInvalid"},
		"one key only":             {method: "PUT", path: "/devices/new", body: `{"deviceId":"new","authentication":{"type":"sas","symmetricKey":{"primaryKey":"MDEyMzQ1Njc4OWFiY2RlZg=="}}}`, status: 400, code: "ArgumentInvalid"},
		"ca with thumbprint":       {method: "PUT", path: "/devices/new", body: `{"deviceId":"new","authentication":{"type":"certificateAuthority","x509Thumbprint":{"primaryThumbprint":"` + strings.Repeat("A", 40) + `"}}}`, status: 400, code: "ArgumentInvalid"},
		"service writes reported":  {method: "PATCH", path: "/twins/dev-1", body: `{"properties":{"reported":{"x":1}}}`, status: 400, code: "ArgumentInvalid"},
		"twin with a stale etag":   {method: "PATCH", path: "/twins/dev-1", ifMatch: "AAAA", body: `{"tags":{"b":1}}`, status: 412, code: "PreconditionFailed"},
		"delete with a stale etag": {method: "DELETE", path: "/devices/dev-1", ifMatch: "stale", status: 412, code: "PreconditionFailed"},
		"unknown resource":         {method: "GET", path: "/jobs/x", status: 404},
		"method not allowed":       {method: "POST", path: "/twins/dev-1", status: 405},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			q := "?api-version=" + hub.APIVersion
			if tc.query == "-" {
				q = ""
			}
			hdr := http.Header{"If-Match": {tc.ifMatch}}
			switch {
			case name == "no token":
			case tc.auth != "":
				hdr.Set("Authorization", tc.auth)
			default:
				hdr.Set("Authorization", valid)
			}
			var body []byte
			if tc.body != "" {
				body = []byte(tc.body)
			}
			resp, err := c.Do(context.Background(), &outbound.Request{Method: tc.method, URL: h.URL + tc.path + q, Header: hdr, Body: body})
			if err != nil {
				t.Fatal(err)
			}
			if resp.Status != tc.status {
				t.Fatalf("status %d %s, want %d", resp.Status, resp.Body, tc.status)
			}
			if tc.code != "" {
				var e struct{ Message, ExceptionMessage string }
				json.Unmarshal(resp.Body, &e)
				if !strings.HasPrefix(e.Message, "ErrorCode:"+tc.code+";") || !strings.HasPrefix(e.ExceptionMessage, "Tracking ID:") || resp.Header.Get("iothub-errorcode") != tc.code {
					t.Fatalf("error body %s, header %q", resp.Body, resp.Header.Get("iothub-errorcode"))
				}
			}
		})
	}
	if d, _ := h.Device("dev-1"); d.Tags["a"] == nil || len(h.DeviceIDs()) != 1 {
		t.Fatal("a refused request changed the hub")
	}
}
