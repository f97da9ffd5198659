package mqtt_test

// The MQTT transport in front of the real provisioning pipeline: the same
// attestation, precedence, refusal reasons, assignment, fast path and strict
// mode as HTTPS, and a device may register over one transport and poll over
// the other.

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/mqtt/mqtttest"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/store"
)

var modes = []struct {
	name   string
	strict bool
}{{"fast", false}, {"strict", true}}

// devices enrolls one device of each attestation kind and returns them.
func devices(t *testing.T, h *harness) map[string]cred {
	h.linkHub(hub1)
	ss, ssKey := selfSigned(t, pki.Options{CommonName: "x509-self"})
	h.putIndividual(x509Individual("x509-self", ss))
	root := newRoot(t, pki.Options{CommonName: "Root"})
	h.uploadCA("root", root.cert, true)
	h.putGroup(caGroup("grp-x509", "root"))
	inter := root.intermediate(t, pki.Options{CommonName: "Intermediate"})
	leaf, leafKey := inter.leaf(t, pki.Options{CommonName: "x509-chain"})
	sym := primaryKey(t, h.putIndividual(symIndividual("sym-individual")).Attestation)
	grp := primaryKey(t, h.putGroup(symGroup("grp-sym")).Attestation)
	return map[string]cred{
		"x509-self":      {cert: tlsCert(ssKey, ss)},
		"x509-chain":     {cert: tlsCert(leafKey, leaf, inter.cert, root.cert)},
		"sym-individual": {sas: h.deviceToken("sym-individual", sym)},
		"sym-group-dev":  {sas: token(srLower(h.Scope, "sym-group-dev"), sas.DeriveDeviceKey(grp, "sym-group-dev"), time.Now().Add(time.Hour))},
	}
}

func TestRegister(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, options{strict: mode.strict})
			for id, c := range devices(t, h) {
				for _, ws := range []bool{false, true} {
					t.Run(id+"/"+transportName(ws), func(t *testing.T) {
						d := h.device(t, ws, id, c)
						a := d.Register("1", []byte(`{"registrationId":"`+id+`","payload":{"modelId":"dtmi:x;1"}}`))
						if a.Status != 202 {
							t.Fatalf("register: %s %s", a.Topic, a.Raw)
						}
						opID := a.String("operationId")
						if mode.strict {
							if a.String("status") != "assigning" || a.RetryAfter != 3 {
								t.Fatalf("strict register: %s %s", a.Topic, a.Raw)
							}
							a = d.Poll("2", opID)
						}
						if a.String("status") != "assigned" || a.String("registrationState", "assignedHub") != hub1 ||
							a.String("registrationState", "deviceId") != id || a.String("operationId") != opID {
							t.Fatalf("answer %s %s", a.Topic, a.Raw)
						}
						if mode.strict && (a.Status != 200 || a.RetryAfter != 0) {
							t.Errorf("strict poll: %s", a.Topic)
						}
						reg, err := h.Store.Registration(context.Background(), id)
						if err != nil || reg.Result.AssignedHub != hub1 {
							t.Errorf("registration record %+v, %v", reg, err)
						}
						d.Disconnect()
					})
				}
			}
			// The pipeline counts registrations by transport.
			for _, tr := range []string{"mqtt", "mqtt-ws"} {
				if got := value(h.PMetrics.Registrations.WithLabelValues(tr, dps.AttestationX509, dps.StatusAssigned)); got != 2 {
					t.Errorf("dpsd_registrations_total{%s,x509,assigned} = %v, want 2", tr, got)
				}
			}
		})
	}
}

// TestAcrossTransports: register over MQTT and poll over HTTPS, and the
// other way round.
func TestAcrossTransports(t *testing.T) {
	h := newHarness(t, options{strict: true})
	c := devices(t, h)["sym-individual"]
	d := h.device(t, false, "sym-individual", c)
	a := d.Register("1", nil)
	if a.Status != 202 || a.String("status") != "assigning" {
		t.Fatalf("%s %s", a.Topic, a.Raw)
	}
	status, body := h.httpsPoll(t, c, "sym-individual", a.String("operationId"))
	if status != 200 || !strings.Contains(body, `"status":"assigned"`) {
		t.Errorf("HTTPS poll of an MQTT registration: %d %s", status, body)
	}
	// HTTPS register, MQTT poll.
	req, _ := http.NewRequest(http.MethodPut, h.HTTPS+"/"+h.Scope+"/registrations/sym-individual/register?api-version=2019-03-31", strings.NewReader(`{"registrationId":"sym-individual"}`))
	req.Header.Set("Authorization", c.sas)
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.httpClient(nil).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var op dps.RegistrationOperationStatus
	json.NewDecoder(resp.Body).Decode(&op)
	resp.Body.Close()
	if resp.StatusCode != 202 || op.OperationID == "" {
		t.Fatalf("HTTPS register: %d %+v", resp.StatusCode, op)
	}
	if a := d.Poll("2", op.OperationID); a.Status != 200 || a.String("status") != "assigned" {
		t.Errorf("MQTT poll of an HTTPS registration: %s %s", a.Topic, a.Raw)
	}
	// Another device's operation is not found.
	other := devices2(t, h)
	if a := other.Poll("3", op.OperationID); a.Status != 404 || a.Number("errorCode") != dpserr.CodeOperationNotFound {
		t.Errorf("another device's operation: %s %s", a.Topic, a.Raw)
	}
}

// devices2 enrolls and connects a second symmetric-key device.
func devices2(t *testing.T, h *harness) *mqtttest.Conn {
	k := primaryKey(t, h.putIndividual(symIndividual("sym-other")).Attestation)
	return h.device(t, false, "sym-other", cred{sas: h.deviceToken("sym-other", k)})
}

func (h *harness) httpClient(c *cred) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: h.tlsConfig(nil)}}
}

func (h *harness) httpsPoll(t *testing.T, c cred, id, opID string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, h.HTTPS+"/"+h.Scope+"/registrations/"+id+"/operations/"+opID+"?api-version=2019-03-31", nil)
	req.Header.Set("Authorization", c.sas)
	resp, err := h.httpClient(nil).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// refusal is one row of the refusal table (the HTTPS table of
// internal/provisioning, as far as it concerns the credentials an MQTT
// device presents).
type refusal struct {
	id       string
	scope    string
	cred     cred
	reason   string
	disabled bool
}

func refusals(t *testing.T, h *harness) map[string]refusal {
	now := time.Now()
	h.linkHub(hub1)
	rootA := newRoot(t, pki.Options{CommonName: "Root A"})
	h.uploadCA("root-a", rootA.cert, true)
	h.putGroup(caGroup("grp-a", "root-a"))
	interA := rootA.intermediate(t, pki.Options{CommonName: "Intermediate A"})
	rootB := newRoot(t, pki.Options{CommonName: "Root B"})
	h.uploadCA("root-b", rootB.cert, false)
	h.putGroup(caGroup("grp-ca-b", "root-b"))
	rootRSA := newRoot(t, pki.Options{CommonName: "Root RSA", KeyType: pki.KeyRSA2048})
	h.uploadCA("root-rsa", rootRSA.cert, true)
	h.putGroup(caGroup("grp-rsa", "root-rsa"))
	rootE := newRoot(t, pki.Options{CommonName: "Root E"})
	h.uploadCA("root-e", rootE.cert, true)
	disabledGroup := caGroup("grp-disabled", "root-e")
	disabledGroup.ProvisioningStatus = dps.ProvisioningDisabled
	h.putGroup(disabledGroup)

	leafOf := func(c ca, cn string, o pki.Options, chain ...*x509.Certificate) cred {
		o.CommonName = cn
		l, k := c.leaf(t, o)
		return cred{cert: tlsCert(k, append([]*x509.Certificate{l}, chain...)...)}
	}
	ssUnknown, ssUnknownKey := selfSigned(t, pki.Options{CommonName: "dev-unknown"})
	sha1Self, sha1SelfKey := selfSigned(t, pki.Options{CommonName: "dev-sha1-self", KeyType: pki.KeyRSA2048, SignatureAlgorithm: x509.SHA1WithRSA})
	h.putIndividual(x509Individual("dev-sha1-self", sha1Self))
	symPK := primaryKey(t, h.putIndividual(symIndividual("sym-dev")).Attestation)
	symDisabled := symIndividual("sym-disabled")
	symDisabled.ProvisioningStatus = dps.ProvisioningDisabled
	symDisabledPK := primaryKey(t, h.putIndividual(symDisabled).Attestation)
	grpPK := primaryKey(t, h.putGroup(symGroup("grp-sym")).Attestation)
	otherKey := make([]byte, 32)
	rand.Read(otherKey)
	hour := now.Add(time.Hour)
	s := h.Scope
	return map[string]refusal{
		"fail/expired-leaf": {id: "dev-expired", cred: leafOf(interA, "dev-expired", pki.Options{NotBefore: now.Add(-72 * time.Hour), NotAfter: now.Add(-24 * time.Hour)}, interA.cert),
			reason: "certificate CN=dev-expired expired at"},
		"fail/cn-differs-from-registration-id": {id: "dev-cn-b", cred: leafOf(interA, "dev-cn-a", pki.Options{}, interA.cert),
			reason: `certificate CN "dev-cn-a" does not match registration ID "dev-cn-b"`},
		"fail/unknown-self-signed": {id: "dev-unknown", cred: cred{cert: tlsCert(ssUnknownKey, ssUnknown)},
			reason: "self-signed certificate (SHA-256 thumbprint " + pki.SHA256Thumbprint(ssUnknown) + ") is not enrolled"},
		"fail/chain-missing-intermediate": {id: "dev-no-inter", cred: leafOf(interA, "dev-no-inter", pki.Options{}),
			reason: "the device sent only its own certificate (issued by CN=Intermediate A)"},
		"fail/chain-to-unverified-ca": {id: "dev-unverified", cred: leafOf(rootB, "dev-unverified", pki.Options{}, rootB.cert),
			reason: `reaches CA certificate "root-b" (CN=Root B), which is not verified`},
		"fail/sha1-leaf": {id: "dev-sha1", cred: leafOf(rootRSA, "dev-sha1", pki.Options{SignatureAlgorithm: x509.SHA1WithRSA}, rootRSA.cert),
			reason: "is signed with SHA1-RSA; dpsd does not accept SHA-1"},
		"fail/sha1-self-signed-individual": {id: "dev-sha1-self", cred: cred{cert: tlsCert(sha1SelfKey, sha1Self)},
			reason: "dpsd does not accept SHA-1"},
		"disabled/group": {id: "dev-grp-disabled", cred: leafOf(rootE, "dev-grp-disabled", pki.Options{}, rootE.cert),
			disabled: true, reason: `enrollment group "grp-disabled" is disabled`},
		"disabled/symmetric-key-individual": {id: "sym-disabled", cred: cred{sas: h.deviceToken("sym-disabled", symDisabledPK)},
			disabled: true, reason: `enrollment "sym-disabled" is disabled`},
		"fail/no-certificate-and-no-sas": {id: "dev-anonymous", reason: "no credentials: present the device certificate"},
		"fail/sas-expired": {id: "sym-dev", cred: cred{sas: token(srLower(s, "sym-dev"), symPK, now.Add(-time.Minute))},
			reason: "the SAS token expired at"},
		"fail/sas-wrong-key": {id: "sym-dev", cred: cred{sas: token(srLower(s, "sym-dev"), otherKey, hour)},
			reason: `the SAS token signature matches neither the primary nor the secondary key of individual enrollment "sym-dev"`},
		"fail/sas-sr-another-registration-id": {id: "sym-dev", cred: cred{sas: token(srLower(s, "sym-dev-2"), symPK, hour)},
			reason: `the SAS token is for resource "` + s + `/registrations/sym-dev-2", not "` + s + `/registrations/sym-dev"`},
		"fail/sas-group-key-used-directly": {id: "grp-dev-1", cred: cred{sas: token(srLower(s, "grp-dev-1"), grpPK, hour)},
			reason: `is signed with a key of enrollment group "grp-sym" itself; a group key cannot authenticate a device`},
		"fail/sas-malformed": {id: "sym-dev", cred: cred{sas: "Bearer eyJhbGciOiJIUzI1NiJ9"},
			reason: `malformed SAS token: token does not start with "SharedAccessSignature "`},
		"fail/unknown-id-scope": {id: "sym-dev", scope: "0ne99999999", cred: cred{sas: token(srLower("0ne99999999", "sym-dev"), symPK, hour)},
			reason: `ID scope "0ne99999999" is not served here`},
	}
}

// TestRefusals: each refusal is answered on res/401 with the DPS error JSON
// and the reason, on register and on a poll; a disabled enrollment ends in
// status "disabled"; nothing is written; a device connected all along keeps
// registering.
func TestRefusals(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, options{strict: mode.strict})
			table := refusals(t, h)
			good := primaryKey(t, h.putIndividual(symIndividual("bystander")).Attestation)
			bystander := h.device(t, false, "bystander", cred{sas: h.deviceToken("bystander", good)})
			for name, tc := range table {
				for _, ws := range []bool{false, true} {
					t.Run(name+"/"+transportName(ws), func(t *testing.T) {
						scope := tc.scope
						if scope == "" {
							scope = h.Scope
						}
						var d *mqtttest.Conn
						if ws {
							d = mqtttest.DialWebSocket(t, h.WSURL, h.tlsConfig(tc.cred.cert), "mqtt")
						} else {
							d = h.dial(t, tc.cred.cert)
						}
						d.MustConnect(scope, tc.id, tc.cred.sas)
						d.Subscribe(1, "$dps/registrations/res/#")
						a := d.Register("r1", nil)
						if tc.disabled {
							checkDisabled(t, d, a, tc, mode.strict)
						} else {
							checkRefused(t, a, tc.reason)
							checkRefused(t, d.Poll("r2", "5.0123456789abcdef.00000000-0000-4000-8000-000000000000"), tc.reason)
						}
						if _, err := h.Store.Registration(context.Background(), tc.id); !errors.Is(err, store.ErrNotFound) {
							t.Errorf("a registration record was written for %s: %v", tc.id, err)
						}
						if a := bystander.Register("b", nil); a.String("status") != map[bool]string{false: "assigned", true: "assigning"}[mode.strict] {
							t.Errorf("the device connected all along: %s %s", a.Topic, a.Raw)
						}
					})
				}
			}
		})
	}
}

func checkRefused(t *testing.T, a *mqtttest.Answer, reason string) {
	t.Helper()
	if a.Status != 401 || !strings.HasPrefix(a.Topic, "$dps/registrations/res/401/?$rid=") || a.RetryAfter != 0 {
		t.Errorf("topic %q, want res/401", a.Topic)
	}
	if a.Number("errorCode") != dpserr.CodeUnauthorized || !strings.Contains(a.String("message"), reason) || a.String("trackingId") == "" {
		t.Errorf("body %s, want errorCode 401002 and %q", a.Raw, reason)
	}
}

func checkDisabled(t *testing.T, d *mqtttest.Conn, a *mqtttest.Answer, tc refusal, strict bool) {
	t.Helper()
	if a.Status != 202 {
		t.Fatalf("register: %s %s", a.Topic, a.Raw)
	}
	if strict {
		if a.String("status") != "assigning" {
			t.Fatalf("strict register: %s", a.Raw)
		}
		a = d.Poll("r2", a.String("operationId"))
		if a.Status != 200 {
			t.Errorf("poll: %s", a.Topic)
		}
	}
	if a.String("status") != "disabled" || a.String("registrationState", "status") != "disabled" ||
		!strings.Contains(a.String("registrationState", "errorMessage"), tc.reason) {
		t.Errorf("answer %s %s, want status disabled with %q", a.Topic, a.Raw, tc.reason)
	}
}
