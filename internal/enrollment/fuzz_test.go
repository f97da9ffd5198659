package enrollment

import (
	"encoding/json"
	"testing"

	"github.com/dpsd/dpsd/internal/dps"
)

// FuzzPrepareIndividual feeds service API bodies to the enrollment rules:
// whatever a client sends, validation returns an error or a complete
// enrollment, and never panics.
func FuzzPrepareIndividual(f *testing.F) {
	f.Add([]byte(`{"registrationId":"dev-1","attestation":{"type":"symmetricKey"}}`))
	f.Add([]byte(`{"registrationId":"dev-1","attestation":{"type":"x509","x509":{"clientCertificates":{"primary":{"certificate":"MIIB"}}}},"allocationPolicy":"static","iotHubs":["a.b"]}`))
	f.Add([]byte(`{"registrationId":"d","attestation":{"type":"tpm","tpm":{"endorsementKey":"AAAA"}},"initialTwin":{"tags":[1]}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var e dps.IndividualEnrollment
		if json.Unmarshal(body, &e) != nil {
			return
		}
		if err := PrepareIndividual(&e, nil); err != nil {
			return
		}
		if e.Attestation == nil || e.ProvisioningStatus == "" || e.Capabilities == nil {
			t.Fatalf("accepted an incomplete enrollment: %+v", e)
		}
		if err := dps.ValidateID("registration ID", e.RegistrationID); err != nil {
			t.Fatalf("accepted an invalid ID: %v", err)
		}
	})
}

// FuzzValidateID checks the ID rules against a plain statement of them.
func FuzzValidateID(f *testing.F) {
	for _, s := range []string{"dev-1", "-x", "x.", "a:b", "x-", "", "é", "a b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		err := dps.ValidateID("id", id)
		ok := len(id) > 0 && len(id) <= dps.MaxIDLength
		for i := 0; ok && i < len(id); i++ {
			c := id[i]
			alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
			special := c == '-' || c == '.' || c == '_' || c == ':'
			switch {
			case !alnum && !special:
				ok = false
			case i == 0 && !alnum:
				ok = false
			case i == len(id)-1 && !alnum && c != '-':
				ok = false
			}
		}
		if ok != (err == nil) {
			t.Fatalf("ValidateID(%q) = %v, rules say valid=%v", id, err, ok)
		}
	})
}
