package provisioning_test

// TPM attestation over HTTPS, with made-up TPM keys (provtest.NewTPM) and
// SAS tokens signed with the challenge key as a TPM that activated it would
// sign them. That the blobs open in a real TPM, to the keys the hub
// receives, is shown by client/tpm's tests and the end-to-end tests, which
// run Microsoft's reference TPM.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/attest"
	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/hub/hubtest"
	"github.com/dpsd/dpsd/internal/provisioning"
	"github.com/dpsd/dpsd/internal/provisioning/provtest"
)

// TestTPM runs a TPM device enrolled under its default registration ID
// through the flow in both modes, with an IoT hub double that gets its
// identity: the unsigned register is answered 401 with only the challenge
// and writes nothing; a second challenge in the middle of the flow breaks
// nothing; the signed register (and its polls) assign the device, whose
// registrationState carries the hub key blob — the same blob on every poll
// and on the status lookup; the hub holds a sas identity with two distinct
// keys; a second registration gets a new blob, and the hub identity new
// keys. No hub key reaches the log or the database.
func TestTPM(t *testing.T) {
	provtest.EachMode(t, func(t *testing.T, mode provtest.Mode) {
		h, ca := hubHarness(t, options{strict: mode.Strict})
		a := hubtest.NewIoTHub(t, hubtest.IoTHubOptions{Options: hubtest.Options{CA: ca}})
		h.linkIoTHub(a)
		dev := provtest.NewTPM(0x91)
		id := dev.RegistrationID()
		h.PutIndividual(provtest.TPMIndividual(id, dev.EK))

		// challenge asks for a challenge; unchanged checks that it writes
		// nothing (not while an assignment runs, which writes the record).
		challenge := func(unchanged bool) {
			t.Helper()
			before := provtest.TakeSnapshot(t, h.db)
			r := h.register(t, provtest.Cred{TPM: dev.Keys()}, id).must(t, "challenge")
			if r.Status != http.StatusUnauthorized {
				t.Fatalf("unsigned register: %s, want 401", r)
			}
			checkHeaders(t, r)
			var body map[string]any
			if err := json.Unmarshal(r.Body, &body); err != nil || len(body) != 2 || body["keyName"] != "registration" {
				t.Fatalf("challenge body %s, want authenticationKey and keyName registration only", r.Body)
			}
			if blob, _ := body["authenticationKey"].(string); len(blob) < 500 {
				t.Fatalf("authenticationKey %q", blob)
			}
			if loc := r.Header.Get("Location"); loc != "" {
				t.Errorf("challenge with Location %q", loc)
			}
			if unchanged {
				provtest.Unchanged(t, before, provtest.TakeSnapshot(t, h.db))
			}
		}
		cred := provtest.Cred{SAS: h.TPMToken(id, dev.EK, time.Now(), time.Now().Add(time.Hour)), TPM: dev.Keys()}
		checkRefusal(t, h.lookup(t, provtest.Cred{TPM: dev.Keys()}, id), http.StatusUnauthorized, dpserr.CodeUnauthorized,
			"a TPM device's status lookup must carry a SAS token signed with the key of its TPM challenge")

		var hubKeys []string
		var blobs []string
		for round := range 2 {
			challenge(true)
			r := h.register(t, cred, id).must(t, "signed register")
			if r.Status != http.StatusAccepted {
				t.Fatalf("signed register: %s", r)
			}
			challenge(false) // another challenge while the device polls
			op := h.pollUntilDone(t, cred, id, r.operation(t))
			rs := op.RegistrationState
			wantSub := map[int]string{0: dps.SubstatusInitialAssignment, 1: dps.SubstatusReprovisionedToInitialAssignment}[round]
			if op.Status != dps.StatusAssigned || rs.AssignedHub != a.HostName || rs.DeviceID != id || rs.Substatus != wantSub || rs.TPM == nil || rs.TPM.AuthenticationKey == "" {
				t.Fatalf("round %d: operation %s %+v", round, op.Status, rs)
			}
			blob := rs.TPM.AuthenticationKey
			for range 2 {
				p := h.poll(t, cred, id, op.OperationID).must(t, "poll")
				if p.Status != http.StatusOK || p.operation(t).RegistrationState.TPM.AuthenticationKey != blob {
					t.Fatalf("poll: %s, want the same blob", p)
				}
			}
			l := h.lookup(t, cred, id).must(t, "lookup")
			if l.Status != http.StatusOK || l.result(t).TPM.AuthenticationKey != blob {
				t.Fatalf("lookup: %s, want the same blob", l)
			}
			d, ok := a.Device(id)
			if !ok || d.Auth.Type != "sas" || d.Auth.SymmetricKey == nil {
				t.Fatalf("the hub's identity of %s: %+v", id, d)
			}
			k := d.Auth.SymmetricKey
			for _, key := range []string{k.PrimaryKey, k.SecondaryKey} {
				if b, err := base64.StdEncoding.DecodeString(key); err != nil || len(b) != 32 {
					t.Errorf("hub key %q is not 32 bytes of base64", key)
				}
			}
			if k.PrimaryKey == k.SecondaryKey {
				t.Error("the hub identity's primary and secondary keys are the same")
			}
			hubKeys = append(hubKeys, k.PrimaryKey, k.SecondaryKey)
			blobs = append(blobs, blob)
		}
		if blobs[0] == blobs[1] || hubKeys[0] == hubKeys[2] || hubKeys[1] == hubKeys[3] {
			t.Error("the second registration kept the hub keys of the first")
		}
		for _, k := range hubKeys {
			if strings.Contains(h.logs.String(), k) {
				t.Errorf("the log holds hub key %s", k)
			}
			for _, q := range []string{`SELECT count(*) FROM registrations WHERE doc LIKE '%' || ? || '%'`, `SELECT count(*) FROM operations WHERE coalesce(result, '') || coalesce(job, '') LIKE '%' || ? || '%'`} {
				var n int
				if err := h.db.QueryRow(q, k).Scan(&n); err != nil || n != 0 {
					t.Errorf("%d rows (%v) hold hub key %s: %s", n, err, k, q)
				}
			}
		}
	})
}

// TestTPMAcrossNodes: a challenge one node issues is honoured by another
// node of the instance (another pipeline on the same store), which reads
// the instance's challenge secret itself.
func TestTPMAcrossNodes(t *testing.T) {
	h := newHarness(t, options{})
	h.LinkHub(hub1, 1, true)
	dev := provtest.NewTPM(0x92)
	h.PutIndividual(provtest.TPMIndividual("tpm-node", dev.EK))
	if r := h.register(t, provtest.Cred{TPM: dev.Keys()}, "tpm-node").must(t, "challenge"); r.Status != http.StatusUnauthorized {
		t.Fatalf("challenge: %s", r)
	}
	other := &provisioning.Pipeline{Store: h.Store, Attest: &attest.Attestor{Store: h.Store, Log: h.Pipeline.Log}, Log: h.Pipeline.Log,
		IDScope: h.Scope, RetryAfter: 3}
	t.Cleanup(func() { other.Drain(context.Background()) })
	ans, err := other.Register(context.Background(), provisioning.Request{Transport: "https", IDScope: h.Scope, RegistrationID: "tpm-node",
		Credentials: attest.Credentials{SAS: h.TPMToken("tpm-node", dev.EK, time.Now(), time.Now().Add(time.Hour))},
		Body:        &dps.DeviceRegistration{RegistrationID: "tpm-node", TPM: dev.Keys()}})
	if err != nil || ans.Body.Status != dps.StatusAssigned || ans.Body.RegistrationState.TPM == nil {
		t.Fatalf("register on the other node: %+v, %v", ans, err)
	}
}
