package allocation_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/dpsd/dpsd/internal/allocation"
	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
)

var linked = []string{"Toasters.azure-devices.net", "heatpumps.azure-devices.net"}

func TestParseCustomResponse(t *testing.T) {
	tests := map[string]struct {
		body     string
		wantErr  string
		wantHub  string
		wantTwin string // JSON of the twin, "" for none
		wantPay  string
	}{
		"ok/minimal":                 {body: `{"iotHubHostName":"heatpumps.azure-devices.net"}`, wantHub: "heatpumps.azure-devices.net"},
		"ok/table spelling":          {body: `{"iotHubHostname":"HEATPUMPS.azure-devices.net"}`, wantHub: "heatpumps.azure-devices.net"},
		"ok/null twin and payload":   {body: `{"iotHubHostName":"heatpumps.azure-devices.net","initialTwin":null,"payload":null}`, wantHub: "heatpumps.azure-devices.net"},
		"ok/desired only":            {body: `{"iotHubHostName":"heatpumps.azure-devices.net","initialTwin":{"properties":{"desired":{"a":1}}}}`, wantHub: "heatpumps.azure-devices.net", wantTwin: `{"properties":{"desired":{"a":1}}}`},
		"ok/payload any JSON":        {body: `{"iotHubHostName":"heatpumps.azure-devices.net","payload":[1,"two"]}`, wantHub: "heatpumps.azure-devices.net", wantPay: `[1,"two"]`},
		"fail/empty":                 {body: ``, wantErr: "not a JSON AllocationResponse"},
		"fail/hub not a string":      {body: `{"iotHubHostName":42}`, wantErr: "not a JSON AllocationResponse"},
		"fail/hub empty":             {body: `{"iotHubHostName":""}`, wantErr: "no iotHubHostName"},
		"fail/twin not an object":    {body: `{"iotHubHostName":"heatpumps.azure-devices.net","initialTwin":"x"}`, wantErr: "initialTwin is not valid"},
		"fail/properties not object": {body: `{"iotHubHostName":"heatpumps.azure-devices.net","initialTwin":{"properties":[]}}`, wantErr: "properties is not a JSON object"},
		"fail/desired not object":    {body: `{"iotHubHostName":"heatpumps.azure-devices.net","initialTwin":{"properties":{"desired":1}}}`, wantErr: "properties.desired is not a JSON object"},
		"fail/too large":             {body: `{"iotHubHostName":"heatpumps.azure-devices.net","payload":"` + strings.Repeat("x", dps.MaxMessageBytes) + `"}`, wantErr: "larger than"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			resp, fail := allocation.ParseCustomResponse([]byte(tc.body), linked)
			if tc.wantErr != "" {
				if fail == nil || fail.Code != dpserr.CodeCustomAllocation || !strings.Contains(fail.Message, tc.wantErr) {
					t.Fatalf("failure %v, want one containing %q", fail, tc.wantErr)
				}
				return
			}
			if fail != nil {
				t.Fatal(fail)
			}
			twin := ""
			if resp.InitialTwin != nil {
				b, _ := json.Marshal(resp.InitialTwin)
				twin = string(b)
			}
			if resp.IotHubHostName != tc.wantHub || twin != tc.wantTwin || string(resp.Payload) != tc.wantPay {
				t.Fatalf("got %q %s %s", resp.IotHubHostName, twin, resp.Payload)
			}
		})
	}
}

func FuzzParseCustomResponse(f *testing.F) {
	f.Add([]byte(`{"iotHubHostName":"heatpumps.azure-devices.net","initialTwin":{"tags":{"a":1},"properties":{"desired":{"b":2}}},"payload":{"c":3}}`))
	f.Add([]byte(`{"iotHubHostname":"TOASTERS.azure-devices.net","initialTwin":null}`))
	f.Add([]byte(`{"iotHubHostName":"x","initialTwin":{"properties":null}}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		resp, fail := allocation.ParseCustomResponse(body, linked)
		if fail != nil {
			if resp != nil || fail.Code != dpserr.CodeCustomAllocation || !strings.HasPrefix(fail.Message, "Custom allocation failed") {
				t.Fatalf("failure %+v with response %+v", fail, resp)
			}
			return
		}
		found := false
		for _, h := range linked {
			found = found || h == resp.IotHubHostName
		}
		if !found {
			t.Fatalf("hub %q is not a linked hub", resp.IotHubHostName)
		}
		if resp.Payload != nil && !json.Valid(resp.Payload) {
			t.Fatalf("payload %q is not JSON", resp.Payload)
		}
		if tw := resp.InitialTwin; tw != nil {
			if tw.Tags != nil && (!json.Valid(tw.Tags) || tw.Tags[0] != '{') {
				t.Fatalf("tags %q", tw.Tags)
			}
			if tw.Properties != nil && (!json.Valid(tw.Properties.Desired) || tw.Properties.Desired[0] != '{') {
				t.Fatalf("desired %q", tw.Properties.Desired)
			}
		}
	})
}
