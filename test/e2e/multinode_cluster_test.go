package e2e_test

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/dpsd/dpsd/client"
	clienttpm "github.com/dpsd/dpsd/client/tpm"
	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/testutil"
	"github.com/dpsd/dpsd/internal/tpm"
	"github.com/dpsd/dpsd/internal/tpmsim"
)

// TestMultiNodeAnyNodeAnswers runs two nodes, started together on one
// empty database, in Azure's strict mode (register answers "assigning", the
// device polls): whatever node a request reaches answers it from the one
// database, at once; a TPM's challenge from one node is honoured by the
// other.
func TestMultiNodeAnyNodeAnswers(t *testing.T) {
	t.Parallel()
	nodes, _ := mnCluster(t, 2, "--azure-strict")
	a, b := nodes[0], nodes[1]
	mnLinkHub(t, a)
	groupKey := mnGroup(t, a, "fleet")

	t.Run("register on one node, poll the operation on the other", func(t *testing.T) {
		d := mnNewDevice(t, a, "fleet-dev-1", client.DeriveKey(groupKey, "fleet-dev-1"))
		reg := d.register(t, a.DeviceEndpoint)
		if reg.status != http.StatusAccepted || reg.str("status") != dps.StatusAssigning || reg.retryAfter == "" {
			t.Fatalf("register on A: %d %s", reg.status, reg.raw)
		}
		op := d.poll(t, b.DeviceEndpoint, reg.str("operationId"))
		if op.status != http.StatusOK || op.str("status") != dps.StatusAssigned || op.str("registrationState.assignedHub") != mnHub {
			t.Fatalf("poll on B: %d %s", op.status, op.raw)
		}
		// The record, looked up on either node, is the operation's.
		for _, n := range nodes {
			st := d.do(t, n.DeviceEndpoint, http.MethodPost, "", map[string]any{"registrationId": d.id})
			if st.status != http.StatusOK || st.str("etag") != op.str("registrationState.etag") {
				t.Fatalf("status lookup on %s: %d %s; the poll said etag %s", n.DeviceEndpoint, st.status, st.raw, op.str("registrationState.etag"))
			}
		}
		// An operation is the device's own on every node.
		other := mnNewDevice(t, a, "fleet-dev-2", client.DeriveKey(groupKey, "fleet-dev-2"))
		if op := other.poll(t, b.DeviceEndpoint, reg.str("operationId")); op.status != http.StatusNotFound {
			t.Fatalf("another device polled the operation on B: %d %s", op.status, op.raw)
		}
	})

	t.Run("a TPM challenged by one node registers on the other", func(t *testing.T) {
		sim, ek, srk := tpmsim.OpenProvisioned(t)
		dev := clienttpm.New(sim)
		regID := tpm.RegistrationID(ek)
		mnMust(t, mnService(t, a, http.MethodPut, "/enrollments/"+regID, "", map[string]any{
			"registrationId": regID,
			"attestation":    map[string]any{"type": "tpm", "tpm": map[string]any{"endorsementKey": base64.StdEncoding.EncodeToString(ek)}},
		}, nil), "enroll the TPM on A")
		d := mnNewDevice(t, a, regID, nil)
		body := map[string]any{"registrationId": regID, "tpm": map[string]any{
			"endorsementKey": base64.StdEncoding.EncodeToString(ek), "storageRootKey": base64.StdEncoding.EncodeToString(srk)}}
		activate := func(what, blob string) {
			t.Helper()
			b, err := base64.StdEncoding.DecodeString(blob)
			if err != nil || len(b) == 0 {
				t.Fatalf("%s: %q", what, blob)
			}
			if err := dev.ActivateIdentityKey(b); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		}
		ch := d.do(t, a.DeviceEndpoint, http.MethodPut, "/register", body)
		if ch.status != http.StatusUnauthorized {
			t.Fatalf("unsigned register on A: %d %s", ch.status, ch.raw)
		}
		activate("the challenge of A", ch.str("authenticationKey"))
		// The token as the Node TPM client makes it, signed in the TPM.
		sr := url.QueryEscape(d.scope + "/registrations/" + regID)
		se := strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)
		sig, err := dev.Sign([]byte(sr + "\n" + se))
		if err != nil {
			t.Fatal(err)
		}
		d.auth = "SharedAccessSignature sr=" + sr + "&sig=" + url.QueryEscape(base64.StdEncoding.EncodeToString(sig)) + "&se=" + se + "&skn=registration"
		reg := d.do(t, b.DeviceEndpoint, http.MethodPut, "/register", body)
		if reg.status != http.StatusAccepted || reg.str("status") != dps.StatusAssigning {
			t.Fatalf("signed register on B: %d %s", reg.status, reg.raw)
		}
		var blob string
		for _, n := range nodes {
			op := d.poll(t, n.DeviceEndpoint, reg.str("operationId"))
			if op.status != http.StatusOK || op.str("status") != dps.StatusAssigned || op.str("registrationState.tpm.authenticationKey") == "" ||
				blob != "" && op.str("registrationState.tpm.authenticationKey") != blob {
				t.Fatalf("poll on %s: %d %s", n.DeviceEndpoint, op.status, op.raw)
			}
			blob = op.str("registrationState.tpm.authenticationKey")
		}
		activate("the hub key", blob)
	})

	t.Run("an enrollment made on one node works on the other at once", func(t *testing.T) {
		key := sas.NewKey(32)
		mnMust(t, mnService(t, a, http.MethodPut, "/enrollments/solo-1", "", map[string]any{
			"registrationId": "solo-1",
			"attestation":    map[string]any{"type": "symmetricKey", "symmetricKey": map[string]any{"primaryKey": key, "secondaryKey": sas.NewKey(32)}},
		}, nil), "create the enrollment on A")
		kb, _ := base64.StdEncoding.DecodeString(key)
		d := mnNewDevice(t, a, "solo-1", kb)
		reg := d.register(t, b.DeviceEndpoint)
		if reg.status != http.StatusAccepted {
			t.Fatalf("register on B right after the enrollment was made on A: %d %s", reg.status, reg.raw)
		}
		if op := d.poll(t, a.DeviceEndpoint, reg.str("operationId")); op.str("status") != dps.StatusAssigned {
			t.Fatalf("poll on A: %d %s", op.status, op.raw)
		}

		// Disabling it on B refuses the device on A at once.
		var e dps.IndividualEnrollment
		mnMust(t, mnService(t, a, http.MethodGet, "/enrollments/solo-1", "", nil, &e), "read on A")
		e.ProvisioningStatus = dps.ProvisioningDisabled
		e.RegistrationState = nil
		mnMust(t, mnService(t, b, http.MethodPut, "/enrollments/solo-1", e.Etag, &e, nil), "disable on B with A's etag")
		reg = d.register(t, a.DeviceEndpoint)
		if op := d.poll(t, a.DeviceEndpoint, reg.str("operationId")); op.str("status") != dps.StatusDisabled {
			t.Fatalf("register on A after B disabled the enrollment: %d %s", op.status, op.raw)
		}

		// Etags hold across nodes: A's read is stale once B wrote.
		if err := mnService(t, a, http.MethodPut, "/enrollments/solo-1", e.Etag, &e, nil); mnStatus(err) != http.StatusPreconditionFailed {
			t.Fatalf("put on A with the etag B replaced: %v, want 412", err)
		}
		if err := mnService(t, a, http.MethodDelete, "/enrollments/solo-1", e.Etag, nil, nil); mnStatus(err) != http.StatusPreconditionFailed {
			t.Fatalf("delete on A with the etag B replaced: %v, want 412", err)
		}

		// Deleting it on A refuses the device on B at once.
		mnMust(t, mnService(t, a, http.MethodDelete, "/enrollments/solo-1", "", nil, nil), "delete on A")
		if reg := d.register(t, b.DeviceEndpoint); reg.status != http.StatusUnauthorized {
			t.Fatalf("register on B after A deleted the enrollment: %d %s", reg.status, reg.raw)
		}
	})
}

// TestMultiNodeConcurrentRegistrations registers one device many times at
// once through two nodes: every answer is either the assignment or the
// "concurrent registration, retry" refusal, and they all agree on one
// record, which both nodes show.
func TestMultiNodeConcurrentRegistrations(t *testing.T) {
	t.Parallel()
	nodes, dsn := mnCluster(t, 2)
	mnLinkHub(t, nodes[0])
	groupKey := mnGroup(t, nodes[1], "racers")
	const id, racers = "racer-1", 16
	d := mnNewDevice(t, nodes[0], id, client.DeriveKey(groupKey, id))

	var created string
	for round := range 3 {
		answers := make([]*mnAnswer, racers)
		testutil.Together(racers, func(i int) {
			a, err := d.try(nodes[i%2].DeviceEndpoint, http.MethodPut, "/register", map[string]any{"registrationId": id})
			if err != nil {
				a = &mnAnswer{raw: err.Error()}
			}
			answers[i] = a
		})

		etags := map[string]bool{}
		for i, a := range answers {
			switch {
			case a.status == http.StatusAccepted && a.str("status") == dps.StatusAssigned:
				etags[a.str("registrationState.etag")] = true
				c := a.str("registrationState.createdDateTimeUtc")
				if created == "" {
					created = c
				}
				if c != created || a.str("registrationState.deviceId") != id || a.str("registrationState.assignedHub") != mnHub {
					t.Fatalf("round %d racer %d: %s; the first assignment was created %s", round, i, a.raw, created)
				}
			case a.status == http.StatusConflict:
			default:
				t.Fatalf("round %d racer %d: %d %s", round, i, a.status, a.raw)
			}
		}
		if len(etags) == 0 {
			t.Fatalf("round %d: no racer was assigned", round)
		}
		var recs [2]dps.DeviceRegistrationState
		for i, n := range nodes {
			mnMust(t, mnService(t, n, http.MethodGet, "/registrations/"+id, "", nil, &recs[i]), "read the record")
		}
		if recs[0].Etag != recs[1].Etag || !etags[recs[0].Etag] || recs[0].CreatedDateTimeUtc.Format() != created {
			t.Fatalf("round %d: the nodes show records with etags %s and %s, created %s; the racers were answered %v, created %s",
				round, recs[0].Etag, recs[1].Etag, recs[0].CreatedDateTimeUtc.Format(), etags, created)
		}
	}
	db := mnDB(t, dsn)
	if n := mnCount(t, db, `SELECT COUNT(*) FROM registrations`); n != 1 {
		t.Fatalf("%d registration rows, want 1", n)
	}
	if n := mnCount(t, db, `SELECT COUNT(*) FROM operations WHERE registration_id = $1`, id); n < 3 {
		t.Fatalf("%d operations, want one per assignment", n)
	}
}
