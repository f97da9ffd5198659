package mqtt_test

// The MQTT transport in front of the real provisioning pipeline: the same
// attestation, precedence, refusal reasons, assignment, fast path and strict
// mode as HTTPS, and a device may register over one transport and poll over
// the other.

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/mqtt"
	"github.com/dpsd/dpsd/internal/mqtt/mqtttest"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/provisioning"
	"github.com/dpsd/dpsd/internal/provisioning/provtest"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/store"
	"github.com/dpsd/dpsd/internal/testutil"
)

// devices enrolls one device of each attestation kind and returns them.
func devices(t *testing.T, h *harness) map[string]provtest.Cred {
	h.LinkHub(hub1, 1, true)
	ss, ssKey := testutil.SelfSigned(t, pki.Options{CommonName: "x509-self"})
	h.PutIndividual(provtest.X509Individual("x509-self", ss, nil))
	root := h.VerifiedRoot("root", pki.Options{CommonName: "Root"})
	h.PutGroup(provtest.CAGroup("grp-x509", "root"))
	inter := root.Intermediate(t, pki.Options{CommonName: "Intermediate"})
	leaf, leafKey := inter.Leaf(t, pki.Options{CommonName: "x509-chain"})
	sym, _ := provtest.Keys(t, h.PutIndividual(provtest.SymIndividual("sym-individual")).Attestation)
	grp, _ := provtest.Keys(t, h.PutGroup(provtest.SymGroup("grp-sym")).Attestation)
	hour := time.Now().Add(time.Hour)
	return map[string]provtest.Cred{
		"x509-self":  {Cert: testutil.TLSCert(ssKey, ss)},
		"x509-chain": {Cert: testutil.TLSCert(leafKey, leaf, inter.Cert, root.Cert)},
		// The Node SDK's resource encoding (unencoded), and the C SDK's.
		"sym-individual": {SAS: provtest.Token(provtest.SRRaw(h.Scope, "sym-individual"), sym, hour, "registration")},
		"sym-group-dev":  {SAS: provtest.Token(provtest.SRLower(h.Scope, "sym-group-dev"), sas.DeriveDeviceKey(grp, "sym-group-dev"), hour, "registration")},
	}
}

func TestRegister(t *testing.T) {
	provtest.EachMode(t, func(t *testing.T, mode provtest.Mode) {
		h := newHarness(t, options{strict: mode.Strict})
		for id, c := range devices(t, h) {
			for _, ws := range []bool{false, true} {
				t.Run(id+"/"+transportName(ws), func(t *testing.T) {
					d := h.device(t, ws, id, c)
					a := d.Register("1", []byte(`{"registrationId":"`+id+`","payload":{"modelId":"dtmi:x;1"}}`))
					if a.Status != 202 {
						t.Fatalf("register: %s %s", a.Topic, a.Raw)
					}
					opID := a.String("operationId")
					if mode.Strict {
						if a.String("status") != "assigning" || a.RetryAfter != 3 {
							t.Fatalf("strict register: %s %s", a.Topic, a.Raw)
						}
						a = d.Poll("2", opID)
					}
					if a.String("status") != "assigned" || a.String("registrationState", "assignedHub") != hub1 ||
						a.String("registrationState", "deviceId") != id || a.String("operationId") != opID {
						t.Fatalf("answer %s %s", a.Topic, a.Raw)
					}
					if mode.Strict && (a.Status != 200 || a.RetryAfter != 0) {
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
	req.Header.Set("Authorization", c.SAS)
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
	k, _ := provtest.Keys(t, h.PutIndividual(provtest.SymIndividual("sym-other")).Attestation)
	return h.device(t, false, "sym-other", provtest.Cred{SAS: h.DeviceToken("sym-other", k)})
}

func (h *harness) httpClient(c *provtest.Cred) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: h.tlsConfig(nil)}}
}

func (h *harness) httpsPoll(t *testing.T, c provtest.Cred, id, opID string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, h.HTTPS+"/"+h.Scope+"/registrations/"+id+"/operations/"+opID+"?api-version=2019-03-31", nil)
	req.Header.Set("Authorization", c.SAS)
	resp, err := h.httpClient(nil).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestRefusals runs every case of provtest.Refusals — the table the HTTPS
// suite runs too — over MQTT/TLS and MQTT over WebSocket, in both modes:
// each refusal is answered on res/401 with the DPS error JSON and the
// reason, on register and on a poll (unless the case's credentials travel
// in the register's payload only), and writes nothing; a disabled
// enrollment ends in status "disabled" and writes one operation and no
// registration record; a device connected all along keeps registering.
// Every refusal and disabled outcome lands in the refusal journal, by
// transport, without a secret.
func TestRefusals(t *testing.T) {
	provtest.EachMode(t, func(t *testing.T, mode provtest.Mode) {
		h := newHarness(t, options{strict: mode.Strict})
		table := provtest.Refusals(h.Instance)
		good, _ := provtest.Keys(t, h.PutIndividual(provtest.SymIndividual("bystander")).Attestation)
		bystander := h.device(t, false, "bystander", provtest.Cred{SAS: h.DeviceToken("bystander", good)})
		refused := map[string]int{}
		for name, tc := range table {
			for _, ws := range []bool{false, true} {
				tr := transportName(ws)
				t.Run(name+"/"+tr, func(t *testing.T) {
					tc.Skip(t, tr)
					before := provtest.TakeSnapshot(t, h.db)
					var d *mqtttest.Conn
					if ws {
						d = mqtttest.DialWebSocket(t, h.WSURL, h.tlsConfig(tc.Cred.Cert), "mqtt")
					} else {
						d = h.dial(t, tc.Cred.Cert)
					}
					d.MustConnect(tc.IDScope(h.Scope), tc.RegistrationID, tc.Cred.SAS)
					d.Subscribe(1, "$dps/registrations/res/#")
					var payload []byte
					if tc.Cred.TPM != nil {
						payload, _ = json.Marshal(dps.DeviceRegistration{RegistrationID: tc.RegistrationID, TPM: tc.Cred.TPM})
					}
					a := d.Register("r1", payload)
					if tc.Want.Terminal != "" {
						checkTerminal(t, d, a, tc, mode.Strict)
						provtest.OneOperation(t, before, provtest.TakeSnapshot(t, h.db))
					} else {
						h.checkRefused(t, a, tc.Want)
						refused[tr]++
						if tc.Polled() {
							h.checkRefused(t, d.Poll("r2", "5.0123456789abcdef.00000000-0000-4000-8000-000000000000"), tc.Want)
							refused[tr]++
						}
						provtest.Unchanged(t, before, provtest.TakeSnapshot(t, h.db))
					}
					if _, err := h.Store.Registration(context.Background(), tc.RegistrationID); !errors.Is(err, store.ErrNotFound) {
						t.Errorf("a registration record was written for %s: %v", tc.RegistrationID, err)
					}
					if a := bystander.Register("b", nil); a.String("status") != map[bool]string{false: "assigned", true: "assigning"}[mode.Strict] {
						t.Errorf("the device connected all along: %s %s", a.Topic, a.Raw)
					}
				})
			}
		}
		// Every refusal went through the pipeline, counted by transport.
		for _, tr := range []string{mqtt.TransportTLS, mqtt.TransportWebSocket} {
			if got := value(h.PMetrics.Refusals.WithLabelValues(tr, strconv.Itoa(dpserr.CodeUnauthorized))); got != float64(refused[tr]) {
				t.Errorf("dpsd_refusals_total{%s,401002} = %v, want %d", tr, got, refused[tr])
			}
		}
		if err := h.Journal.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
		for _, tr := range []string{mqtt.TransportTLS, mqtt.TransportWebSocket} {
			provtest.CheckJournal(t, h.Instance, table, tr, func(tc provtest.Refusal) []string {
				if tc.Want.Terminal != "" || !tc.Polled() {
					return []string{provisioning.OpRegister}
				}
				return []string{provisioning.OpRegister, provisioning.OpPoll}
			}, h.logs.String())
		}
	})
}

// checkRefused checks a refusal on the response topic: the status and the
// DPS error JSON of want, no retry-after, and a trackingId that is in the
// server's log line.
func (h *harness) checkRefused(t *testing.T, a *mqtttest.Answer, want provtest.Outcome) {
	t.Helper()
	if a.Status != want.Status || !strings.HasPrefix(a.Topic, "$dps/registrations/res/"+strconv.Itoa(want.Status)+"/?$rid=") || a.RetryAfter != 0 {
		t.Errorf("topic %q, want res/%d without retry-after", a.Topic, want.Status)
	}
	e := provtest.CheckError(t, a.Raw, a.Status, want.ErrorCode, want.Reason)
	if !h.logContains("trackingId=" + e.TrackingID) {
		t.Errorf("trackingId %s is in no server log line", e.TrackingID)
	}
}

// checkTerminal checks the answers to a device whose enrollment is
// disabled: register 202 (with the terminal status, or "assigning" in strict
// mode), then a poll 200 with the terminal status.
func checkTerminal(t *testing.T, d *mqtttest.Conn, a *mqtttest.Answer, tc provtest.Refusal, strict bool) {
	t.Helper()
	if a.Status != tc.Want.Status {
		t.Fatalf("register: %s %s, want %d", a.Topic, a.Raw, tc.Want.Status)
	}
	var first dps.RegistrationOperationStatus
	provtest.StrictDecode(t, a.Raw, &first)
	if strict {
		if first.Status != dps.StatusAssigning || first.RegistrationState != nil {
			t.Errorf("strict register: status %q, registrationState %v; want assigning and none", first.Status, first.RegistrationState)
		}
	} else {
		tc.CheckTerminal(t, &first)
	}
	p := d.Poll("r2", first.OperationID)
	if p.Status != 200 || p.RetryAfter != 0 {
		t.Fatalf("poll: %s %s, want res/200", p.Topic, p.Raw)
	}
	var op dps.RegistrationOperationStatus
	provtest.StrictDecode(t, p.Raw, &op)
	tc.CheckTerminal(t, &op)
}
