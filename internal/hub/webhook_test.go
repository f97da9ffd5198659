package hub_test

import (
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/hub"
	"github.com/dpsd/dpsd/internal/hub/hubtest"
	"github.com/dpsd/dpsd/internal/outbound"
	"github.com/dpsd/dpsd/internal/testutil"
)

const secret = "an operator secret, 32 chars...."

func newWebhook(t *testing.T, o hubtest.Options, registrySecret string, retry hub.Retry) (*hubtest.RegistryWebhook, hub.Registry) {
	t.Helper()
	w := hubtest.NewRegistryWebhook(t, o, secret)
	var c *outbound.Client
	if w.CA != nil {
		c = w.CA.Client(t, outbound.Options{Version: "9.9"})
	} else {
		var err error
		if c, err = outbound.New(outbound.Options{Version: "9.9"}); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Date(2027, 3, 4, 5, 6, 7, 0, time.UTC)
	reg, err := hub.New(hub.Config{Kind: hub.KindWebhook, Hub: hubName, WebhookURL: w.URL + "/dpsd/events?token=abc", WebhookSecret: registrySecret},
		hub.Options{Client: c, Retry: retry, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return w, reg
}

func TestWebhookDeviceAssigned(t *testing.T) {
	for _, plain := range []bool{false, true} {
		w, reg := newWebhook(t, hubtest.Options{Plain: plain}, secret, fast)
		a := &hub.Assignment{
			RegistrationID: "reg-1", DeviceID: "dev-1", Attestation: dps.AttestationSymmetricKey,
			Auth: hub.SASAuth(key(1), key(2)), IotEdge: true,
			Twin: twin(`{"site":"a"}`, `{"interval":5}`), TwinMode: hub.TwinReplace,
			Substatus: dps.SubstatusDeviceDataReset, Payload: json.RawMessage(`{"model":"t-1000"}`),
			PreviousHub: "hub-old.azure-devices.net",
		}
		if err := reg.Apply(context.Background(), a); err != nil {
			t.Fatal(err)
		}
		calls := w.Calls()
		if len(calls) != 1 {
			t.Fatalf("%d deliveries", len(calls))
		}
		c := calls[0]
		if c.Method != "POST" || c.Path != "/dpsd/events" || c.Query != "token=abc" {
			t.Fatalf("request %s %s?%s", c.Method, c.Path, c.Query)
		}
		events := w.Events()
		if len(events) != 1 {
			t.Fatalf("verified events: %d", len(events))
		}
		ev := events[0]
		if c.Header.Get(hub.EventHeader) != "deviceAssigned" || c.Header.Get(hub.DeliveryHeader) != ev.ID || ev.ID == "" {
			t.Fatalf("headers %v, event ID %q", c.Header, ev.ID)
		}
		if c.Header.Get("Content-Type") != "application/json; charset=utf-8" || c.Header.Get("User-Agent") != "dpsd/9.9" {
			t.Fatalf("headers %v", c.Header)
		}
		want := `{"eventType":"deviceAssigned","eventId":"` + ev.ID + `","eventTime":"2027-03-04T05:06:07Z","hub":"hub-a.azure-devices.net",` +
			`"registrationId":"reg-1","deviceId":"dev-1","substatus":"deviceDataReset","attestation":"symmetricKey",` +
			`"authentication":{"type":"sas","symmetricKey":{"primaryKey":"` + key(1) + `","secondaryKey":"` + key(2) + `"}},` +
			`"capabilities":{"iotEdge":true},"initialTwin":{"tags":{"site":"a"},"properties":{"desired":{"interval":5}}},` +
			`"twinMode":"replace","payload":{"model":"t-1000"},"previousHub":"hub-old.azure-devices.net"}`
		if string(c.Body) != want {
			t.Fatalf("body\n got %s\nwant %s", c.Body, want)
		}
		if got := c.Header.Get(hub.SignatureHeader); got != hub.Sign([]byte(secret), c.Body) {
			t.Fatalf("signature %q", got)
		}
		if tw, err := reg.Twin(context.Background(), "dev-1"); tw != nil || err != nil {
			t.Fatalf("a webhook registry cannot read twins: %v %v", tw, err)
		}
	}
}

func TestWebhookDeviceRemoved(t *testing.T) {
	w, reg := newWebhook(t, hubtest.Options{}, secret, fast)
	if err := reg.Remove(context.Background(), &hub.Removal{RegistrationID: "reg-1", DeviceID: "dev-1", NewHub: "hub-b"}); err != nil {
		t.Fatal(err)
	}
	ev := w.Events()[0]
	want := hub.Event{Type: hub.EventDeviceRemoved, ID: ev.ID, Time: time.Date(2027, 3, 4, 5, 6, 7, 0, time.UTC),
		Hub: hubName, RegistrationID: "reg-1", DeviceID: "dev-1", NewHub: "hub-b"}
	if !reflect.DeepEqual(ev, want) {
		t.Fatalf("event %+v, want %+v", ev, want)
	}
}

func TestWebhookWrongSecret(t *testing.T) {
	w, reg := newWebhook(t, hubtest.Options{}, "not the receiver's secret", fast)
	err := reg.Apply(context.Background(), &hub.Assignment{DeviceID: "dev-1", Auth: hub.SASAuth(key(1), key(2))})
	he := asHubError(t, err)
	if !he.Unauthorized() || he.Attempts != 1 || he.Registry != hub.KindWebhook || len(w.Events()) != 0 {
		t.Fatalf("error %+v", he)
	}
	msg := err.Error()
	for _, want := range []string{"registry webhook " + w.URL + "/dpsd/events?****", "of hub " + hubName, "refused dpsd's credentials", "signature does not verify"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	for _, s := range []string{"token=abc", "not the receiver's secret", key(1)} {
		if strings.Contains(msg, s) {
			t.Errorf("message %q contains %q", msg, s)
		}
	}
}

func TestWebhookRetriesWithOneEventID(t *testing.T) {
	w, reg := newWebhook(t, hubtest.Options{}, secret, fast)
	w.FailNext(2, http.StatusBadGateway)
	if err := reg.Apply(context.Background(), &hub.Assignment{DeviceID: "dev-1", Auth: hub.CAAuth()}); err != nil {
		t.Fatal(err)
	}
	calls := w.Calls()
	if len(calls) != 3 {
		t.Fatalf("%d deliveries, want 3", len(calls))
	}
	for _, c := range calls[1:] {
		if c.Header.Get(hub.DeliveryHeader) != calls[0].Header.Get(hub.DeliveryHeader) || string(c.Body) != string(calls[0].Body) {
			t.Fatal("a retry is not the same delivery")
		}
	}

	w.SetAnswer(http.StatusConflict, `{"error":"device exists in the broker"}`)
	err := reg.Apply(context.Background(), &hub.Assignment{DeviceID: "dev-2", Auth: hub.CAAuth()})
	he := asHubError(t, err)
	if he.Status != 409 || he.Attempts != 1 || !strings.Contains(err.Error(), "device exists in the broker") {
		t.Fatalf("error %v (%+v)", err, he)
	}
}

func TestWebhookTimeout(t *testing.T) {
	w := hubtest.NewRegistryWebhook(t, hubtest.Options{}, secret)
	w.SetDelay(time.Hour)
	reg, err := hub.New(hub.Config{Kind: hub.KindWebhook, Hub: hubName, WebhookURL: w.URL, WebhookSecret: secret},
		hub.Options{Client: w.CA.Client(t, outbound.Options{Timeout: 50 * time.Millisecond}), Retry: hub.Retry{Attempts: 2, Base: time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	err = reg.Apply(context.Background(), &hub.Assignment{DeviceID: "dev-1", Auth: hub.CAAuth()})
	if he := asHubError(t, err); !he.Timeout() || he.Attempts != 2 {
		t.Fatalf("error %+v", he)
	}
}

func TestSignature(t *testing.T) {
	// Computed with: printf hello | openssl dgst -sha256 -hmac secret
	const want = "sha256=88aab3ede8d3adf94d26ab90d3bafd4a2083070c3bcce9c014ee04a443847c0b"
	if got := hub.Sign([]byte("secret"), []byte("hello")); got != want {
		t.Fatalf("Sign = %s", got)
	}
	for header, ok := range map[string]bool{
		want:                                  true,
		strings.ToUpper(want[7:]):             false, // the prefix is required
		"sha256=" + strings.ToUpper(want[7:]): true,
		want[:len(want)-2] + "00":             false,
		"sha1=" + want[7:]:                    false,
		"sha256=zz":                           false,
		"":                                    false,
	} {
		if got := hub.VerifySignature([]byte("secret"), []byte("hello"), header); got != ok {
			t.Errorf("VerifySignature(%q) = %v", header, got)
		}
	}
	if hub.VerifySignature([]byte("secret"), []byte("hello!"), want) {
		t.Error("a changed body verifies")
	}
}

func TestNoneRegistry(t *testing.T) {
	reg, err := hub.New(hub.Config{}, hub.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := reg.Apply(ctx, &hub.Assignment{}); err != nil {
		t.Fatal(err)
	}
	if tw, err := reg.Twin(ctx, "x"); tw != nil || err != nil {
		t.Fatal(tw, err)
	}
	if err := reg.Remove(ctx, &hub.Removal{}); err != nil {
		t.Fatal(err)
	}
}

func TestConfigValidate(t *testing.T) {
	const cs = "HostName=hub.local:9443;SharedAccessKeyName=iothubowner;SharedAccessKey=c2VjcmV0LWtleS0xMjM0NTY="
	tests := map[string]struct {
		c       hub.Config
		wantErr string
	}{
		"ok/none":                   {c: hub.Config{}},
		"ok/azure with port":        {c: hub.Config{Kind: hub.KindAzureIoTHub, ConnectionString: cs}},
		"ok/azure without port":     {c: hub.Config{Kind: hub.KindAzureIoTHub, ConnectionString: strings.Replace(cs, ":9443", "", 1)}},
		"ok/webhook https":          {c: hub.Config{Kind: hub.KindWebhook, WebhookURL: "https://registry.example.com/dpsd", WebhookSecret: secret}},
		"ok/webhook http loopback":  {c: hub.Config{Kind: hub.KindWebhook, WebhookURL: "http://127.0.0.1:8080/dpsd", WebhookSecret: secret}},
		"fail/azure no key":         {c: hub.Config{Kind: hub.KindAzureIoTHub, ConnectionString: "HostName=hub.local;SharedAccessKeyName=p"}, wantErr: "SharedAccessKey"},
		"fail/azure no host":        {c: hub.Config{Kind: hub.KindAzureIoTHub, ConnectionString: "SharedAccessKeyName=p;SharedAccessKey=a2V5"}, wantErr: "HostName"},
		"fail/azure host with path": {c: hub.Config{Kind: hub.KindAzureIoTHub, ConnectionString: strings.Replace(cs, ":9443", "/x", 1)}, wantErr: "not a host name"},
		"fail/azure host scheme":    {c: hub.Config{Kind: hub.KindAzureIoTHub, ConnectionString: strings.Replace(cs, "hub.local", "https://hub.local", 1)}, wantErr: "not a host name"},
		"fail/azure port zero":      {c: hub.Config{Kind: hub.KindAzureIoTHub, ConnectionString: strings.Replace(cs, "9443", "0", 1)}, wantErr: "outside"},
		"fail/azure port too big":   {c: hub.Config{Kind: hub.KindAzureIoTHub, ConnectionString: strings.Replace(cs, "9443", "65536", 1)}, wantErr: "outside"},
		"fail/webhook http remote":  {c: hub.Config{Kind: hub.KindWebhook, WebhookURL: "http://registry.example.com/dpsd", WebhookSecret: secret}, wantErr: "loopback"},
		"fail/webhook short secret": {c: hub.Config{Kind: hub.KindWebhook, WebhookURL: "https://registry.example.com/", WebhookSecret: "short"}, wantErr: "at least 16"},
		"fail/webhook no URL":       {c: hub.Config{Kind: hub.KindWebhook, WebhookSecret: secret}, wantErr: "no host"},
		"fail/unknown kind":         {c: hub.Config{Kind: "mqtt"}, wantErr: "not none, azure-iothub or webhook"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if !testutil.WantError(t, tc.c.Validate(), tc.wantErr) {
				return
			}
			if _, err := hub.New(tc.c, hub.Options{}); err == nil {
				t.Fatal("New accepted what Validate refuses")
			}
		})
	}
}

func TestParseKind(t *testing.T) {
	for in, want := range map[string]hub.Kind{"": hub.KindNone, "none": hub.KindNone, "Azure-IoTHub": hub.KindAzureIoTHub, "webhook": hub.KindWebhook} {
		if got, err := hub.ParseKind(in); err != nil || got != want {
			t.Errorf("ParseKind(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := hub.ParseKind("iothub"); err == nil {
		t.Error("ParseKind(iothub) succeeded")
	}
}
