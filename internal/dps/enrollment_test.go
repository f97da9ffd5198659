package dps_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/dpsd/dpsd/internal/dps"
)

// flatIndividual is the individual enrollment as one flat struct: the
// member order of Azure's model, which the embedded settings must keep.
type flatIndividual struct {
	RegistrationID                  string                               `json:"registrationId"`
	DeviceID                        string                               `json:"deviceId,omitempty"`
	RegistrationState               *dps.DeviceRegistrationState         `json:"registrationState,omitempty"`
	Attestation                     *dps.AttestationMechanism            `json:"attestation"`
	Capabilities                    *dps.DeviceCapabilities              `json:"capabilities,omitempty"`
	IotHubHostName                  string                               `json:"iotHubHostName,omitempty"`
	InitialTwin                     *dps.InitialTwin                     `json:"initialTwin,omitempty"`
	Etag                            string                               `json:"etag,omitempty"`
	ProvisioningStatus              string                               `json:"provisioningStatus,omitempty"`
	ReprovisionPolicy               *dps.ReprovisionPolicy               `json:"reprovisionPolicy,omitempty"`
	OptionalDeviceInformation       json.RawMessage                      `json:"optionalDeviceInformation,omitempty"`
	CreatedDateTimeUtc              *dps.Time                            `json:"createdDateTimeUtc,omitempty"`
	LastUpdatedDateTimeUtc          *dps.Time                            `json:"lastUpdatedDateTimeUtc,omitempty"`
	AllocationPolicy                string                               `json:"allocationPolicy,omitempty"`
	IotHubs                         []string                             `json:"iotHubs,omitempty"`
	CustomAllocationDefinition      *dps.CustomAllocationDefinition      `json:"customAllocationDefinition,omitempty"`
	CredentialPolicyName            string                               `json:"credentialPolicyName,omitempty"`
	ClientCertificateIssuancePolicy *dps.ClientCertificateIssuancePolicy `json:"clientCertificateIssuancePolicy,omitempty"`
}

// TestEnrollmentMemberOrder decodes bodies into the models and checks that
// they encode to the same bytes as the flat structs, with and without HTML
// escaping, and that nothing is lost on the way.
func TestEnrollmentMemberOrder(t *testing.T) {
	const twin = `"initialTwin":{"tags":{"createdDateTimeUtc":"<&>","x":[1,{"allocationPolicy":2}]}}`
	bodies := []string{
		`{"registrationId":"a","attestation":null}`,
		`{"registrationId":"a","attestation":{"type":"x509"},"optionalDeviceInformation":{"k":"v"}}`,
		`{"registrationId":"a","deviceId":"d","attestation":{"type":"symmetricKey","symmetricKey":{"primaryKey":"p"}},` + twin + `,"etag":"e","provisioningStatus":"enabled","reprovisionPolicy":{"updateHubAssignment":true,"migrateDeviceData":false},"optionalDeviceInformation":{"a":"<b>&"},"createdDateTimeUtc":"2024-01-02T03:04:05.678Z","lastUpdatedDateTimeUtc":"2024-01-02T03:04:05Z","allocationPolicy":"static","iotHubs":["h.example"],"customAllocationDefinition":{"webhookUrl":"https://w?a=1&b=2","apiVersion":"v"},"credentialPolicyName":"c","clientCertificateIssuancePolicy":{"certificateAuthorityName":"c"}}`,
		`{"registrationId":"a","attestation":{"type":"tpm"},"optionalDeviceInformation":null,"allocationPolicy":"hashed"}`,
		`{"registrationId":"a","attestation":{"type":"tpm"},"capabilities":{"iotEdge":true},"optionalDeviceInformation":[1, 2],"credentialPolicyName":"c"}`,
		`{"registrationId":"a","attestation":{"type":"tpm"},"optionalDeviceInformation":"x","iotHubHostName":"h"}`,
		`{"registrationId":"a","registrationState":{"registrationId":"a","status":"assigned"},"attestation":{"type":"tpm"},"optionalDeviceInformation":{},"lastUpdatedDateTimeUtc":"2024-01-02T03:04:05Z"}`,
	}
	for _, body := range bodies {
		var e dps.IndividualEnrollment
		var flat flatIndividual
		if err := json.Unmarshal([]byte(body), &e); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(body), &flat); err != nil {
			t.Fatal(err)
		}
		sameEncoding(t, body, &e, &flat)
		// A group's members are the individual enrollment's, less its own.
		g := dps.EnrollmentGroup{EnrollmentGroupID: e.RegistrationID, EnrollmentSettings: e.EnrollmentSettings}
		flat.DeviceID, flat.RegistrationState, flat.OptionalDeviceInformation = "", nil, nil
		sameEncoding(t, body, &g, groupOf(flat))
	}
}

// groupOf encodes like the group with the members of f.
type groupOf flatIndividual

func (f groupOf) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // the caller's encoder escapes, or not
	err := enc.Encode(flatIndividual(f))
	return bytes.Replace(b.Bytes(), []byte(`{"registrationId":`), []byte(`{"enrollmentGroupId":`), 1), err
}

func sameEncoding(t *testing.T, body string, got, want any) {
	t.Helper()
	for _, escape := range []bool{true, false} {
		var g, w bytes.Buffer
		for _, c := range []struct {
			buf *bytes.Buffer
			v   any
		}{{&g, got}, {&w, want}} {
			enc := json.NewEncoder(c.buf)
			enc.SetEscapeHTML(escape)
			if err := enc.Encode(c.v); err != nil {
				t.Fatalf("%s: %v", body, err)
			}
		}
		if g.String() != w.String() {
			t.Errorf("escape HTML %v, body %s:\n got %s\nwant %s", escape, body, g.String(), w.String())
		}
	}
}
