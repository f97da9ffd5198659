package mqtt_test

import (
	"context"
	"testing"

	"github.com/dpsd/dpsd/internal/provisioning/provtest"
	"github.com/dpsd/dpsd/internal/store"
)

// TestCSR: over MQTT as over HTTPS, a register payload with a csr gets the
// certificate chain in registrationState, and every case of
// provtest.CSRRefusals is refused on the response topic with its reason,
// writing nothing.
func TestCSR(t *testing.T) {
	h := newHarness(t, options{})
	for name, tc := range provtest.CSRRefusals(h.Instance) {
		t.Run(name, func(t *testing.T) {
			before := provtest.TakeSnapshot(t, h.db)
			d := h.device(t, false, tc.RegistrationID, tc.Cred)
			h.checkRefused(t, d.Register("1", tc.Body()), tc.Want)
			provtest.Unchanged(t, before, provtest.TakeSnapshot(t, h.db))
		})
	}
	t.Run("ok", func(t *testing.T) {
		// csr-dev's enrollment issues from csr-ca (see CSRRefusals).
		ok := provtest.CSRCase{RegistrationID: "csr-dev", CSR: provtest.CSR(t, provtest.DeviceKey(t), "csr-dev")}
		e, err := h.Store.Enrollment(context.Background(), "csr-dev")
		if err != nil {
			t.Fatal(err)
		}
		pk, _ := provtest.Keys(t, e.Attestation)
		d := h.device(t, true, "csr-dev", provtest.Cred{SAS: h.DeviceToken("csr-dev", pk)})
		a := d.Register("1", ok.Body())
		chain, _ := a.Body["registrationState"].(map[string]any)["issuedCertificateChain"].([]any)
		if a.Status != 202 || a.String("status") != "assigned" || len(chain) != 2 {
			t.Fatalf("register: %s %s", a.Topic, a.Raw)
		}
		p, err := h.Store.IssuedCertificates(context.Background(), store.IssuedFilter{RegistrationID: "csr-dev"}, "", 10)
		if err != nil || len(p.Items) != 1 {
			t.Fatalf("issued certificates of csr-dev: %d (%v)", len(p.Items), err)
		}
	})
}
