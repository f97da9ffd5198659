package provisioning_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/attest"
	"github.com/dpsd/dpsd/internal/hub"
	"github.com/dpsd/dpsd/internal/hub/hubtest"
	"github.com/dpsd/dpsd/internal/provisioning"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/provisioning/provtest"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/store"
	"github.com/dpsd/dpsd/internal/testutil"
)

// TestCSRRefusals runs every case of provtest.CSRRefusals through the HTTPS
// device API in both modes: each is answered with its reason and writes
// nothing — no record, no operation, no certificate.
func TestCSRRefusals(t *testing.T) {
	provtest.EachMode(t, func(t *testing.T, mode provtest.Mode) {
		h := newHarness(t, options{strict: mode.Strict})
		for name, tc := range provtest.CSRRefusals(h.Instance) {
			t.Run(name, func(t *testing.T) {
				before := provtest.TakeSnapshot(t, h.db)
				r := h.registerBody(t, tc.Cred, tc.RegistrationID, tc.Body()).must(t, "register")
				checkRefusal(t, r, tc.Want.Status, tc.Want.ErrorCode, tc.Want.Reason)
				provtest.Unchanged(t, before, provtest.TakeSnapshot(t, h.db))
				h.noRecord(t, tc.RegistrationID)
			})
		}
	})
}

func jsonBody(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	must(t, err)
	return b
}

func csrBody(t testing.TB, id string, key crypto.Signer) []byte {
	return jsonBody(t, dps.DeviceRegistration{RegistrationID: id, CSR: provtest.CSR(t, key, id)})
}

// issuedChain decodes issuedCertificateChain and checks it: base64 DER,
// the device's certificate first (CN = the registration ID, the device's
// key, clientAuth), each issued by the next, up to ca.
func issuedChain(t testing.TB, r *dps.DeviceRegistrationResult, id string, key crypto.Signer, ca *store.IssuingCA) []*x509.Certificate {
	t.Helper()
	if r == nil || len(r.IssuedCertificateChain) != 2 || r.IssuedClientCertificate != "" {
		t.Fatalf("registrationState %s: want issuedCertificateChain with the certificate and its CA", testutil.JSON(t, r))
	}
	var certs []*x509.Certificate
	for _, s := range r.IssuedCertificateChain {
		der, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			t.Fatalf("issuedCertificateChain holds %q, not base64", s)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	leaf := certs[0]
	if leaf.Subject.CommonName != id || !pki.KeyMatches(key, leaf.PublicKey) || !certs[1].Equal(mustCert(t, ca.CertificateDER)) {
		t.Fatalf("issued %s (the device's key: %v), then %s", leaf.Subject, pki.KeyMatches(key, leaf.PublicKey), certs[1].Subject)
	}
	roots := x509.NewCertPool()
	roots.AddCert(certs[1])
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("the issued certificate does not verify with its CA: %v", err)
	}
	return certs
}

func mustCert(t testing.TB, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// checkIssuedRecord checks the store's record of leaf.
func (h *harness) checkIssuedRecord(t testing.TB, leaf *x509.Certificate, id, groupID, ca string) {
	t.Helper()
	rec, err := h.Store.IssuedCertificate(context.Background(), pki.SerialNumber(leaf))
	if err != nil {
		t.Fatalf("the issued certificate is not recorded: %v", err)
	}
	if rec.RegistrationID != id || rec.EnrollmentGroupID != groupID || rec.IssuingCA != ca || rec.SHA256Thumbprint != pki.SHA256Thumbprint(leaf) || rec.Revoked() {
		t.Fatalf("record %+v", rec)
	}
}

func withIssuingCA[P dps.Enrollment](e P, ca string) P {
	e.Settings().CredentialPolicyName = ca
	return e
}

// TestIssuance: a device that sends a CSR leaves with a certificate of its
// enrollment's issuing CA — in the register answer and in every poll —
// and may register again with it instead of its onboarding credential.
func TestIssuance(t *testing.T) {
	provtest.EachMode(t, func(t *testing.T, mode provtest.Mode) {
		h := newHarness(t, options{strict: mode.Strict})
		h.LinkHub(hub1, 1, true)
		ca := h.IssuingCA("line-ca")

		t.Run("individual enrollment, then its certificate", func(t *testing.T) {
			pk, _ := provtest.Keys(t, h.PutIndividual(withIssuingCA(provtest.SymIndividual("sym-csr"), "line-ca")).Attestation)
			sasCred := provtest.Cred{SAS: h.DeviceToken("sym-csr", pk)}
			key := provtest.DeviceKey(t)
			op := h.provisionBody(t, sasCred, "sym-csr", csrBody(t, "sym-csr", key))
			checkResult(t, op.RegistrationState, want{regID: "sym-csr", deviceID: "sym-csr", hub: hub1, mechanism: dps.AttestationSymmetricKey}, time.Time{})
			chain := issuedChain(t, op.RegistrationState, "sym-csr", key, ca)
			h.checkIssuedRecord(t, chain[0], "sym-csr", "", "line-ca")
			// The status lookup never carries the certificates.
			h.checkLookup(t, sasCred, "sym-csr", op.RegistrationState.WithoutIssued())

			// The device registers again with its new certificate.
			for _, presented := range [][]*x509.Certificate{{chain[0]}, chain} {
				op := h.provision(t, provtest.Cred{Cert: testutil.TLSCert(key, presented...)}, "sym-csr")
				checkResult(t, op.RegistrationState, want{regID: "sym-csr", deviceID: "sym-csr", hub: hub1, mechanism: dps.AttestationX509,
					leaf: chain[0], substatus: dps.SubstatusReprovisionedToInitialAssignment}, time.Time{})
				if len(op.RegistrationState.IssuedCertificateChain) != 0 {
					t.Fatal("a register without a csr got a certificate")
				}
			}
		})

		t.Run("enrollment group, then its certificate", func(t *testing.T) {
			gk, _ := provtest.Keys(t, h.PutGroup(withIssuingCA(provtest.SymGroup("sym-grp-csr"), "line-ca")).Attestation)
			key := provtest.DeviceKey(t)
			op := h.provisionBody(t, provtest.Cred{SAS: h.DeviceToken("grp-csr-1", sas.DeriveDeviceKey(gk, "grp-csr-1"))}, "grp-csr-1", csrBody(t, "grp-csr-1", key))
			chain := issuedChain(t, op.RegistrationState, "grp-csr-1", key, ca)
			h.checkIssuedRecord(t, chain[0], "grp-csr-1", "sym-grp-csr", "line-ca")
			op = h.provision(t, provtest.Cred{Cert: testutil.TLSCert(key, chain[0])}, "grp-csr-1")
			checkResult(t, op.RegistrationState, want{regID: "grp-csr-1", deviceID: "grp-csr-1", hub: hub1, mechanism: dps.AttestationX509,
				groupID: "sym-grp-csr", leaf: chain[0], signer: chain[1], substatus: dps.SubstatusReprovisionedToInitialAssignment}, time.Time{})
		})

		t.Run("clientCertificateCsr answers issuedClientCertificate", func(t *testing.T) {
			pk, _ := provtest.Keys(t, h.PutIndividual(withIssuingCA(provtest.SymIndividual("sym-csr-2021"), "line-ca")).Attestation)
			key := provtest.DeviceKey(t)
			body := jsonBody(t, dps.DeviceRegistration{ClientCertificateCSR: provtest.CSR(t, key, "sym-csr-2021")})
			op := h.provisionBody(t, provtest.Cred{SAS: h.DeviceToken("sym-csr-2021", pk)}, "sym-csr-2021", body)
			r := op.RegistrationState
			certs, err := pki.ParseCertificates([]byte(r.IssuedClientCertificate))
			if err != nil || len(r.IssuedCertificateChain) != 0 {
				t.Fatalf("answer %s (%v)", testutil.JSON(t, r), err)
			}
			// The CA is a root: the PEM holds the device's certificate only.
			if len(certs) != 1 || certs[0].Subject.CommonName != "sym-csr-2021" || !pki.KeyMatches(key, certs[0].PublicKey) {
				t.Fatalf("issuedClientCertificate holds %d certificates", len(certs))
			}
			h.checkIssuedRecord(t, certs[0], "sym-csr-2021", "", "line-ca")
		})

		t.Run("a registration that fails issues nothing", func(t *testing.T) {
			e := withIssuingCA(provtest.SymIndividual("sym-csr-nohub"), "line-ca")
			e.IotHubs = []string{"not-linked.azure-devices.net"}
			pk, _ := provtest.Keys(t, h.PutIndividual(e).Attestation)
			op := h.provisionBody(t, provtest.Cred{SAS: h.DeviceToken("sym-csr-nohub", pk)}, "sym-csr-nohub", csrBody(t, "sym-csr-nohub", provtest.DeviceKey(t)))
			if op.Status != dps.StatusFailed || len(op.RegistrationState.IssuedCertificateChain) != 0 {
				t.Fatalf("answer %s, want failed without a certificate", testutil.JSON(t, op))
			}
			if p := issuedOf(t, h.Store, "sym-csr-nohub"); len(p) != 0 {
				t.Fatalf("%d certificates recorded for a failed registration", len(p))
			}
		})

		t.Run("a revoked certificate is refused", func(t *testing.T) {
			pk, _ := provtest.Keys(t, h.PutIndividual(withIssuingCA(provtest.SymIndividual("sym-csr-rev"), "line-ca")).Attestation)
			sasCred := provtest.Cred{SAS: h.DeviceToken("sym-csr-rev", pk)}
			key := provtest.DeviceKey(t)
			chain := issuedChain(t, h.provisionBody(t, sasCred, "sym-csr-rev", csrBody(t, "sym-csr-rev", key)).RegistrationState, "sym-csr-rev", key, ca)
			serial := pki.SerialNumber(chain[0])
			if _, err := h.Store.RevokeIssuedCertificates(context.Background(), store.Revocation{SerialNumber: serial, Reason: "keyCompromise"}); err != nil {
				t.Fatal(err)
			}
			before := provtest.TakeSnapshot(t, h.db)
			r := h.register(t, provtest.Cred{Cert: testutil.TLSCert(key, chain[0])}, "sym-csr-rev").must(t, "register")
			checkRefusal(t, r, http.StatusUnauthorized, dpserr.CodeUnauthorized, "(serial number "+serial+"), issued by issuing CA \"line-ca\", was revoked at ")
			checkRefusal(t, r, http.StatusUnauthorized, dpserr.CodeUnauthorized, "(keyCompromise)")
			provtest.Unchanged(t, before, provtest.TakeSnapshot(t, h.db))
			// The onboarding credential gets a new certificate.
			again := issuedChain(t, h.provisionBody(t, sasCred, "sym-csr-rev", csrBody(t, "sym-csr-rev", key)).RegistrationState, "sym-csr-rev", key, ca)
			if pki.SerialNumber(again[0]) == serial {
				t.Fatal("the new certificate has the revoked one's serial number")
			}
		})
	})
}

func issuedOf(t testing.TB, st store.Store, id string) []*store.IssuedCertificate {
	t.Helper()
	p, err := st.IssuedCertificates(context.Background(), store.IssuedFilter{RegistrationID: id}, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	return p.Items
}

// TestIssuedCertificatePrecedence: the enrollment that issued a
// certificate vouches for it while it still issues; when it no longer does,
// the certificate is refused with the reason, unless a group matches its
// chain as it would any certificate's.
func TestIssuedCertificatePrecedence(t *testing.T) {
	for name, c := range map[string]struct {
		group  bool // issued through a group rather than an individual enrollment
		change func(h *harness, id string)
		want   provtest.Outcome
	}{
		"individual enrollment deleted": {change: func(h *harness, id string) {
			must(h.T, h.Store.DeleteEnrollment(context.Background(), id, ""))
		}, want: provtest.Refused(`which dpsd issued under individual enrollment "dev-p", which no longer exists`)},
		"enrollment no longer issues": {change: func(h *harness, id string) {
			h.PutIndividual(provtest.SymIndividual(id))
		}, want: provtest.Refused(`under enrollment "dev-p", which no longer issues certificates`)},
		"issuing CA deleted": {change: func(h *harness, id string) {
			must(h.T, h.Store.DeleteIssuingCA(context.Background(), "ca-p", ""))
		}, want: provtest.Refused(`with issuing CA "ca-p", which was deleted`)},
		"issuing CA replaced": {change: func(h *harness, id string) {
			h.IssuingCA("ca-p")
		}, want: provtest.Refused(`does not verify with the key of issuing CA "ca-p" as it is now`)},
		"enrollment disabled": {change: func(h *harness, id string) {
			e := withIssuingCA(provtest.SymIndividual(id), "ca-p")
			e.ProvisioningStatus = dps.ProvisioningDisabled
			h.PutIndividual(e)
		}, want: provtest.Disabled(`enrollment "dev-p" is disabled`)},
		"group deleted": {group: true, change: func(h *harness, id string) {
			must(h.T, h.Store.DeleteGroup(context.Background(), "grp-p", ""))
		}, want: provtest.Refused(`through enrollment group "grp-p", which no longer exists`)},
		"an individual enrollment now decides": {group: true, change: func(h *harness, id string) {
			h.PutIndividual(withIssuingCA(provtest.SymIndividual(id), "ca-p"))
		}, want: provtest.Refused(`through enrollment group "grp-p", is not one of individual enrollment "dev-p"'s`)},
		"a group on the CA takes over": {change: func(h *harness, id string) {
			must(h.T, h.Store.DeleteEnrollment(context.Background(), id, ""))
			ca, err := h.Store.IssuingCA(context.Background(), "ca-p")
			must(h.T, err)
			h.UploadCA("ca-p-as-ca", mustCert(h.T, ca.CertificateDER), true)
			h.PutGroup(provtest.CAGroup("grp-on-ca", "ca-p-as-ca"))
		}, want: provtest.Outcome{Status: http.StatusAccepted}},
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, options{})
			h.LinkHub(hub1, 1, true)
			h.IssuingCA("ca-p")
			const id = "dev-p"
			var cred provtest.Cred
			if c.group {
				gk, _ := provtest.Keys(t, h.PutGroup(withIssuingCA(provtest.SymGroup("grp-p"), "ca-p")).Attestation)
				cred.SAS = h.DeviceToken(id, sas.DeriveDeviceKey(gk, id))
			} else {
				pk, _ := provtest.Keys(t, h.PutIndividual(withIssuingCA(provtest.SymIndividual(id), "ca-p")).Attestation)
				cred.SAS = h.DeviceToken(id, pk)
			}
			key := provtest.DeviceKey(t)
			op := h.provisionBody(t, cred, id, csrBody(t, id, key))
			der, err := base64.StdEncoding.DecodeString(op.RegistrationState.IssuedCertificateChain[0])
			must(t, err)
			leaf := mustCert(t, der)
			c.change(h, id)
			r := h.register(t, provtest.Cred{Cert: testutil.TLSCert(key, leaf)}, id).must(t, "register")
			if c.want.Status != http.StatusAccepted {
				checkRefusal(t, r, c.want.Status, c.want.ErrorCode, c.want.Reason)
				return
			}
			if r.Status != http.StatusAccepted {
				t.Fatalf("register: %s", r)
			}
			res := r.operation(t)
			if c.want.Terminal != "" {
				provtest.Refusal{RegistrationID: id, Want: c.want}.CheckTerminal(t, res)
				return
			}
			checkResult(t, res.RegistrationState, want{regID: id, deviceID: id, hub: hub1, mechanism: dps.AttestationX509, groupID: "grp-on-ca",
				leaf: leaf, signer: mustCert(t, mustIssuingCA(t, h, "ca-p").CertificateDER), substatus: dps.SubstatusReprovisionedToInitialAssignment}, time.Time{})
		})
	}
}

func mustIssuingCA(t testing.TB, h *harness, name string) *store.IssuingCA {
	t.Helper()
	c, err := h.Store.IssuingCA(context.Background(), name)
	must(t, err)
	return c
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestIssuanceRacingRegistrations: registrations of one device racing each
// other, each with a CSR, record exactly the certificates they delivered.
func TestIssuanceRacingRegistrations(t *testing.T) {
	h := newHarness(t, options{})
	h.LinkHub(hub1, 1, true)
	h.IssuingCA("race-ca")
	pk, _ := provtest.Keys(t, h.PutIndividual(withIssuingCA(provtest.SymIndividual("race-dev"), "race-ca")).Attestation)
	cred := provtest.Cred{SAS: h.DeviceToken("race-dev", pk)}
	var mu sync.Mutex
	delivered := map[string]bool{}
	testutil.Together(8, func(int) {
		r := h.registerBody(t, cred, "race-dev", csrBody(t, "race-dev", provtest.DeviceKey(t)))
		if r.Err != nil || r.Status != http.StatusAccepted {
			return // a 409 after too many collisions is allowed; it delivers nothing
		}
		var op dps.RegistrationOperationStatus
		if err := json.Unmarshal(r.Body, &op); err != nil || op.RegistrationState == nil || len(op.RegistrationState.IssuedCertificateChain) == 0 {
			t.Errorf("answer %s", r.Body)
			return
		}
		der, _ := base64.StdEncoding.DecodeString(op.RegistrationState.IssuedCertificateChain[0])
		mu.Lock()
		delivered[pki.SerialNumber(mustCert(t, der))] = true
		mu.Unlock()
	})
	recorded := issuedOf(t, h.Store, "race-dev")
	if len(recorded) != len(delivered) || len(delivered) == 0 {
		t.Fatalf("%d certificates delivered, %d recorded", len(delivered), len(recorded))
	}
	for _, c := range recorded {
		if !delivered[c.SerialNumber] {
			t.Errorf("certificate %s was recorded but not delivered", c.SerialNumber)
		}
	}
}

// TestIssuanceThroughTheHub: when the assignment calls out (a hub with a
// device registry), the job carries the CSR, the certificate is signed
// before the hub call, and the hub's device identity is that certificate
// (selfSigned, its thumbprint), as it is when the device registers again
// with it. A job taken over by another node after its own stopped issues
// too.
func TestIssuanceThroughTheHub(t *testing.T) {
	t.Parallel()
	h, ca := hubHarness(t, options{assignWait: 100 * time.Millisecond, assignTimeout: 30 * time.Second})
	iot := hubtest.NewIoTHub(t, hubtest.IoTHubOptions{Options: hubtest.Options{CA: ca}})
	h.linkIoTHub(iot)
	h.IssuingCA("hub-ca")
	enroll := func(id string) provtest.Cred {
		pk, _ := provtest.Keys(t, h.PutIndividual(withIssuingCA(provtest.SymIndividual(id), "hub-ca")).Attestation)
		return provtest.Cred{SAS: h.DeviceToken(id, pk)}
	}
	hubAuth := func(id string) hub.Authentication {
		t.Helper()
		d, ok := iot.Device(id)
		if !ok {
			t.Fatalf("the hub has no device %s", id)
		}
		return d.Auth
	}
	leafOf := func(op *dps.RegistrationOperationStatus) *x509.Certificate {
		t.Helper()
		if op.Status != dps.StatusAssigned || op.RegistrationState == nil || len(op.RegistrationState.IssuedCertificateChain) == 0 {
			t.Fatalf("answer %s, want assigned with a chain", testutil.JSON(t, op))
		}
		der, err := base64.StdEncoding.DecodeString(op.RegistrationState.IssuedCertificateChain[0])
		must(t, err)
		return mustCert(t, der)
	}

	t.Run("the hub learns the certificate", func(t *testing.T) {
		cred, key := enroll("hub-csr-1"), provtest.DeviceKey(t)
		r := h.registerBody(t, cred, "hub-csr-1", csrBody(t, "hub-csr-1", key)).must(t, "register")
		leaf := leafOf(h.pollUntilDone(t, cred, "hub-csr-1", r.operation(t)))
		h.checkIssuedRecord(t, leaf, "hub-csr-1", "", "hub-ca")
		want := hub.SelfSignedAuth(pki.SHA256Thumbprint(leaf), "")
		if got := hubAuth("hub-csr-1"); !reflect.DeepEqual(got, want) {
			t.Fatalf("the hub's identity %+v, want %+v", got, want)
		}
		// Registering again with the certificate keeps that identity.
		iot.ResetCalls()
		op := h.settle(t, provtest.Cred{Cert: testutil.TLSCert(key, leaf)}, "hub-csr-1")
		if op.Status != dps.StatusAssigned {
			t.Fatalf("register with the certificate: %s", testutil.JSON(t, op))
		}
		sameJSON(t, "PUT /devices authentication", callBody(t, iot.Server, 0)["authentication"],
			`{"type":"selfSigned","x509Thumbprint":{"primaryThumbprint":"`+pki.SHA256Thumbprint(leaf)+`"}}`)
	})

	t.Run("a job taken over issues", func(t *testing.T) {
		cred, key := enroll("hub-csr-2"), provtest.DeviceKey(t)
		op := h.stopMidAssignment(t, iot, cred, "hub-csr-2", csrBody(t, "hub-csr-2", key))
		ans, err := h.otherNode(t).OperationStatus(context.Background(), provisioning.Request{Transport: "https", IDScope: h.Scope, RegistrationID: "hub-csr-2",
			Credentials: attest.Credentials{SAS: cred.SAS}}, op.OperationID)
		if err != nil {
			t.Fatal(err)
		}
		leaf := leafOf(ans.Body)
		if !pki.KeyMatches(key, leaf.PublicKey) {
			t.Fatal("the certificate is not for the device's key")
		}
		h.checkIssuedRecord(t, leaf, "hub-csr-2", "", "hub-ca")
		if got := hubAuth("hub-csr-2"); got.X509Thumbprint == nil || got.X509Thumbprint.PrimaryThumbprint != pki.SHA256Thumbprint(leaf) {
			t.Fatalf("the hub's identity %+v", got)
		}
		if n := len(issuedOf(t, h.Store, "hub-csr-2")); n != 1 {
			t.Fatalf("%d certificates recorded, want 1", n)
		}
	})

	t.Run("a job taken over while the store fails stays for its next run", func(t *testing.T) {
		cred, key := enroll("hub-csr-3"), provtest.DeviceKey(t)
		op := h.stopMidAssignment(t, iot, cred, "hub-csr-3", csrBody(t, "hub-csr-3", key))
		other := h.otherNode(t)
		other.Store = issuingCAUnavailable{Store: h.Store}
		poll := func() (*provisioning.Answer, error) {
			return other.OperationStatus(context.Background(), provisioning.Request{Transport: "https", IDScope: h.Scope, RegistrationID: "hub-csr-3",
				Credentials: attest.Credentials{SAS: cred.SAS}}, op.OperationID)
		}
		if ans, err := poll(); err == nil && ans.Body.Status != dps.StatusAssigning {
			t.Fatalf("with the store failing the job ended %s: %s", ans.Body.Status, testutil.JSON(t, ans.Body))
		}
		stored, err := h.Store.Operation(context.Background(), op.OperationID)
		if err != nil || stored.Status != dps.StatusAssigning || stored.Job == nil {
			t.Fatalf("after the store failed: %+v, %v; want the operation assigning with its job", stored, err)
		}
		// Its next run, once the lease the failed run took has run out.
		later := h.otherNode(t)
		later.Now = func() time.Time { return time.Now().Add(5 * time.Minute) }
		ans, err := later.OperationStatus(context.Background(), provisioning.Request{Transport: "https", IDScope: h.Scope, RegistrationID: "hub-csr-3",
			Credentials: attest.Credentials{SAS: cred.SAS}}, op.OperationID)
		if err != nil || ans.Body.Status != dps.StatusAssigned {
			t.Fatalf("once the store answers: %+v, %v; want assigned", ans, err)
		}
	})
}

// issuingCAUnavailable is a store that cannot read issuing CAs, as when the
// database does not answer.
type issuingCAUnavailable struct{ store.Store }

func (issuingCAUnavailable) IssuingCA(context.Context, string) (*store.IssuingCA, error) {
	return nil, store.ErrUnavailable
}
