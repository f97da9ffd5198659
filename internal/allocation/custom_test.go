package allocation_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/allocation"
	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/hub/hubtest"
	"github.com/dpsd/dpsd/internal/outbound"
)

func groupEnrollment(url string) *dps.EnrollmentGroup {
	return &dps.EnrollmentGroup{
		EnrollmentGroupID: "contoso-custom",
		EnrollmentSettings: dps.EnrollmentSettings{
			Attestation:                &dps.AttestationMechanism{Type: dps.AttestationSymmetricKey, SymmetricKey: &dps.SymmetricKeyAttestation{PrimaryKey: "cHJpbWFyeS1rZXktMTIzNDU2", SecondaryKey: "c2Vjb25kYXJ5LWtleS0xMjM0"}},
			AllocationPolicy:           dps.AllocationCustom,
			IotHubs:                    linked,
			CustomAllocationDefinition: &dps.CustomAllocationDefinition{WebhookURL: url, APIVersion: "2021-10-01"},
		},
	}
}

func newCustom(t *testing.T, w *hubtest.AllocationWebhook, timeout time.Duration) *allocation.CustomClient {
	t.Helper()
	return &allocation.CustomClient{Client: w.CA.Client(t, outbound.Options{Version: "9.9"}), Timeout: timeout}
}

func TestCustomAllocationRoundTrip(t *testing.T) {
	w := hubtest.NewAllocationWebhook(t, hubtest.Options{})
	w.SetAnswer(http.StatusOK, `{"iotHubHostName":"toasters.azure-devices.net",
		"initialTwin":{"tags":{"deviceType":"toaster"},"properties":{"desired":{"state":"ready"}}},
		"payload":{"welcome":"toaster"}, "extra":"ignored"}`)
	url := w.URL + "/api/alloc?code=FUNCTION-KEY"
	g := groupEnrollment(url)
	req := allocation.NewCustomRequest(nil, g, allocation.DeviceRuntimeContext{
		RegistrationID: "breakroom499-contoso-tstrsd-007", SymmetricKey: &allocation.SymmetricKeyContext{},
		Payload: json.RawMessage(`{"model":"t-1"}`),
	}, linked)
	resp, fail := newCustom(t, w, 0).Allocate(context.Background(), url, req)
	if fail != nil {
		t.Fatal(fail)
	}
	if resp.IotHubHostName != "Toasters.azure-devices.net" {
		t.Fatalf("hub %q, want the linked spelling", resp.IotHubHostName)
	}
	if string(resp.InitialTwin.Tags) != `{"deviceType":"toaster"}` || string(resp.InitialTwin.Properties.Desired) != `{"state":"ready"}` {
		t.Fatalf("twin %+v", resp.InitialTwin)
	}
	if string(resp.Payload) != `{"welcome":"toaster"}` {
		t.Fatalf("payload %s", resp.Payload)
	}

	c := w.Calls()[0]
	if c.Method != "POST" || c.Path != "/api/alloc" || c.Query != "code=FUNCTION-KEY" ||
		c.Header.Get("Content-Type") != "application/json; charset=utf-8" || c.Header.Get("User-Agent") != "dpsd/9.9" {
		t.Fatalf("request %s %s?%s %v", c.Method, c.Path, c.Query, c.Header)
	}
	want := `{"enrollmentGroup":{"enrollmentGroupId":"contoso-custom","attestation":{"type":"symmetricKey"},` +
		`"allocationPolicy":"custom","iotHubs":["Toasters.azure-devices.net","heatpumps.azure-devices.net"],` +
		`"customAllocationDefinition":{"webhookUrl":"` + w.URL + `/api/alloc?****","apiVersion":"2021-10-01"}},` +
		`"deviceRuntimeContext":{"registrationId":"breakroom499-contoso-tstrsd-007","symmetricKey":{},"payload":{"model":"t-1"}},` +
		`"linkedHubs":["Toasters.azure-devices.net","heatpumps.azure-devices.net"]}`
	if string(c.Body) != want {
		t.Fatalf("body\n got %s\nwant %s", c.Body, want)
	}
	if g.Attestation.SymmetricKey == nil || g.CustomAllocationDefinition.WebhookURL != url {
		t.Fatal("NewCustomRequest changed the enrollment it was given")
	}
}

func TestCustomAllocationRequestShapes(t *testing.T) {
	w := hubtest.NewAllocationWebhook(t, hubtest.Options{})
	info := &dps.X509CertificateInfo{SubjectName: "CN=dev-1", SHA1Thumbprint: "AB", SHA256Thumbprint: "CD"}
	e := &dps.IndividualEnrollment{RegistrationID: "dev-1", DeviceID: "device-one",
		EnrollmentSettings: dps.EnrollmentSettings{
			Attestation: &dps.AttestationMechanism{Type: dps.AttestationX509, X509: &dps.X509Attestation{ClientCertificates: &dps.X509Certificates{
				Primary: &dps.X509CertificateWithInfo{Certificate: "-----BEGIN CERTIFICATE-----...", Info: info}}}},
			AllocationPolicy:           dps.AllocationCustom,
			CustomAllocationDefinition: &dps.CustomAllocationDefinition{WebhookURL: w.URL, APIVersion: "2021-10-01"},
		}}
	req := allocation.NewCustomRequest(e, nil, allocation.DeviceRuntimeContext{
		RegistrationID: "dev-1", CurrentIotHubHostName: "heatpumps.azure-devices.net", CurrentDeviceID: "device-one",
		X509: &dps.X509RegistrationResult{CertificateInfo: info},
	}, linked[1:])
	if _, fail := newCustom(t, w, 0).Allocate(context.Background(), w.URL, req); fail != nil {
		t.Fatal(fail)
	}
	body := string(w.Calls()[0].Body)
	for _, want := range []string{
		`"individualEnrollment":{"registrationId":"dev-1","deviceId":"device-one","attestation":{"type":"x509","x509":{"clientCertificates":{"primary":{"info":{"subjectName":"CN=dev-1"`,
		`"deviceRuntimeContext":{"registrationId":"dev-1","currentIotHubHostName":"heatpumps.azure-devices.net","currentDeviceId":"device-one","x509":{"certificateInfo":{"subjectName":"CN=dev-1"`,
		`"linkedHubs":["heatpumps.azure-devices.net"]`,
		`"webhookUrl":"` + w.URL + `"`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("body lacks %s\nbody: %s", want, body)
		}
	}
	if strings.Contains(body, "BEGIN CERTIFICATE") || strings.Contains(body, "enrollmentGroup") {
		t.Errorf("body: %s", body)
	}
	if got := w.Requests()[0].DeviceRuntimeContext.CurrentDeviceID; got != "device-one" {
		t.Errorf("parsed request: currentDeviceId %q", got)
	}
}

func TestCustomAllocationFailures(t *testing.T) {
	tests := map[string]struct {
		setup   func(w *hubtest.AllocationWebhook)
		url     func(w *hubtest.AllocationWebhook) string
		want    string
		timeout time.Duration
	}{
		"non-2xx": {
			setup: func(w *hubtest.AllocationWebhook) {
				w.SetAnswer(http.StatusBadRequest, `{"error":"unknown device model"}`)
			},
			want: `Custom allocation failed with status code: 400. The webhook answered: {"error":"unknown device model"}`,
		},
		"500 without body": {
			setup: func(w *hubtest.AllocationWebhook) { w.SetAnswer(http.StatusInternalServerError, ``) },
			want:  `Custom allocation failed with status code: 500. The webhook answered: (empty body)`,
		},
		"timeout": {
			setup:   func(w *hubtest.AllocationWebhook) { w.SetDelay(time.Hour) },
			timeout: 50 * time.Millisecond,
			want:    "Custom allocation failed: the webhook did not answer in time",
		},
		"malformed JSON": {
			setup: func(w *hubtest.AllocationWebhook) { w.SetAnswer(http.StatusOK, `{"iotHubHostName":`) },
			want:  "Custom allocation failed: the webhook's answer is not a JSON AllocationResponse",
		},
		"not an object": {
			setup: func(w *hubtest.AllocationWebhook) { w.SetAnswer(http.StatusOK, `["toasters.azure-devices.net"]`) },
			want:  "not a JSON AllocationResponse",
		},
		"no hub": {
			setup: func(w *hubtest.AllocationWebhook) { w.SetAnswer(http.StatusOK, `{"payload":{}}`) },
			want:  "Custom allocation failed: the webhook's answer has no iotHubHostName",
		},
		"hub not linked": {
			setup: func(w *hubtest.AllocationWebhook) {
				w.SetAnswer(http.StatusOK, `{"iotHubHostName":"other.azure-devices.net"}`)
			},
			want: `Custom allocation failed: the webhook chose IoT hub "other.azure-devices.net", which is not one of the linked hubs offered to it (Toasters.azure-devices.net, heatpumps.azure-devices.net)`,
		},
		"bad twin": {
			setup: func(w *hubtest.AllocationWebhook) {
				w.SetAnswer(http.StatusOK, `{"iotHubHostName":"heatpumps.azure-devices.net","initialTwin":{"tags":"x"}}`)
			},
			want: "the webhook's initialTwin is not valid: tags is not a JSON object",
		},
		"http to a remote host": {
			setup: func(w *hubtest.AllocationWebhook) {},
			url:   func(w *hubtest.AllocationWebhook) string { return "http://192.0.2.1/hook?code=KEY" },
			want:  "Custom allocation failed: the enrollment's webhook URL is refused: plain http:// is allowed only to loopback",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			w := hubtest.NewAllocationWebhook(t, hubtest.Options{})
			tc.setup(w)
			url := w.URL + "/alloc?code=KEY"
			if tc.url != nil {
				url = tc.url(w)
			}
			req := allocation.NewCustomRequest(nil, groupEnrollment(url), allocation.DeviceRuntimeContext{RegistrationID: "d"}, linked)
			resp, fail := newCustom(t, w, tc.timeout).Allocate(context.Background(), url, req)
			if fail == nil {
				t.Fatalf("succeeded: %+v", resp)
			}
			if fail.Code != dpserr.CodeCustomAllocation || !strings.Contains(fail.Message, tc.want) {
				t.Fatalf("failure %d %q, want 400207 containing %q", fail.Code, fail.Message, tc.want)
			}
			if strings.Contains(fail.Message, "KEY") {
				t.Fatalf("the message shows the function key: %q", fail.Message)
			}
		})
	}
}

func TestCustomAllocationUntrustedTLS(t *testing.T) {
	w := hubtest.NewAllocationWebhook(t, hubtest.Options{})
	c, err := outbound.New(outbound.Options{})
	if err != nil {
		t.Fatal(err)
	}
	req := allocation.NewCustomRequest(nil, groupEnrollment(w.URL), allocation.DeviceRuntimeContext{RegistrationID: "d"}, linked)
	_, fail := (&allocation.CustomClient{Client: c}).Allocate(context.Background(), w.URL, req)
	if fail == nil || !strings.Contains(fail.Message, "could not be reached") || !strings.Contains(fail.Message, "certificate") {
		t.Fatalf("failure %v", fail)
	}
	if len(w.Calls()) != 0 {
		t.Fatal("the request reached a webhook whose certificate is not trusted")
	}
}
