package server_test

import (
	"crypto/tls"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/mqtt/mqtttest"
	"github.com/dpsd/dpsd/internal/provisioning/provtest"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/server"
	"github.com/dpsd/dpsd/internal/server/servertest"
	"github.com/dpsd/dpsd/internal/store"
	"github.com/dpsd/dpsd/internal/store/storetest"
)

// fleet is a server with a linked hub and symmetric-key groups whose
// devices register over HTTPS and MQTT.
type fleet struct {
	srv  *servertest.Server
	keys map[string][]byte // group ID: primary key
}

func newFleet(t *testing.T, srv *servertest.Server, groups ...string) *fleet {
	t.Helper()
	in := provtest.Instance{T: t, Store: srv.Store(), Scope: srv.State.IDScope}
	in.LinkHub(provtest.Hub1, 1, true)
	f := &fleet{srv: srv, keys: map[string][]byte{}}
	for _, g := range groups {
		f.keys[g], _ = provtest.Keys(t, in.PutGroup(provtest.SymGroup(g)).Attestation)
	}
	return f
}

// token is the SAS token of device id of group g.
func (f *fleet) token(g, id string) string {
	return sas.New(sas.DeviceResource(f.srv.State.IDScope, id), "registration", sas.DeriveDeviceKey(f.keys[g], id), time.Now().Add(time.Hour), true)
}

// https registers device id of group g over HTTPS.
func (f *fleet) https(t *testing.T, g, id string) answer {
	t.Helper()
	return register(t, f.srv, id, nil, f.token(g, id))
}

// poll polls an operation over HTTPS.
func (f *fleet) poll(t *testing.T, g, id, op string) answer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "https://"+f.srv.State.DeviceEndpoint+"/"+f.srv.State.IDScope+"/registrations/"+id+"/operations/"+op, nil)
	req.Header.Set("Authorization", f.token(g, id))
	return roundTrip(t, f.srv.HTTPClient(t), req)
}

// mqtt connects device id of group g over MQTT (TLS) and subscribes.
func (f *fleet) mqtt(t *testing.T, g, id string) *mqtttest.Conn {
	t.Helper()
	c := mqtttest.DialTLS(t, f.srv.MQTTAddr, &tls.Config{RootCAs: f.srv.Roots, ServerName: "localhost"})
	c.MustConnect(f.srv.State.IDScope, id, f.token(g, id))
	c.Subscribe(1, "$dps/registrations/res/#")
	return c
}

// errorOf decodes a DPS error body.
func errorOf(t *testing.T, body string) dps.ErrorDetails {
	t.Helper()
	var e dps.ErrorDetails
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("not a DPS error: %s", body)
	}
	return e
}

// operationOf decodes a register answer.
func operationOf(t *testing.T, body string) dps.RegistrationOperationStatus {
	t.Helper()
	var op dps.RegistrationOperationStatus
	if err := json.Unmarshal([]byte(body), &op); err != nil {
		t.Fatalf("not an operation status: %s", body)
	}
	return op
}

// metricsText is the server's /metrics (on --metrics-addr).
func metricsText(t *testing.T, srv *servertest.Server) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+srv.State.MetricsEndpoint+"/metrics", nil)
	return roundTrip(t, &http.Client{Timeout: 10 * time.Second}, req).body
}

// TestThrottling: over the rates, registrations and polls answer 429 with
// Retry-After and errorCode 429001 on both transports (HTTP status and
// header; the MQTT response topic), service API requests too, each saying
// which rate was met, and the metric counts them.
func TestThrottling(t *testing.T) {
	srv := servertest.Start(t, server.Config{MQTTAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0",
		ThrottleRegistrations: "2/min", ThrottlePolls: "1/min", ThrottleService: "3/min"})
	f := newFleet(t, srv, "grp")

	first := f.https(t, "grp", "th-1")
	c2 := f.mqtt(t, "grp", "th-2")
	second := c2.Register("1", nil)
	if first.status != http.StatusAccepted || second.Status != http.StatusAccepted {
		t.Fatalf("the first two registrations: %d %s; %d %s", first.status, first.body, second.Status, second.Raw)
	}
	r := f.https(t, "grp", "th-3")
	e := errorOf(t, r.body)
	if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" || r.header.Get("x-ms-error-code") != "429001" ||
		e.ErrorCode != 429001 || !strings.Contains(e.Message, "(--throttle-registrations 2/min)") {
		t.Fatalf("third registration over HTTPS: %d Retry-After %q: %s", r.status, r.header.Get("Retry-After"), r.body)
	}
	a := f.mqtt(t, "grp", "th-4").Register("1", nil)
	if a.Status != http.StatusTooManyRequests || a.RetryAfter < 1 || a.Number("errorCode") != 429001 {
		t.Fatalf("fourth registration over MQTT: %s %s", a.Topic, a.Raw)
	}

	op := operationOf(t, first.body).OperationID
	if r := f.poll(t, "grp", "th-1", op); r.status != http.StatusOK {
		t.Fatalf("first poll: %d %s", r.status, r.body)
	}
	if r := f.poll(t, "grp", "th-1", op); r.status != http.StatusTooManyRequests || !strings.Contains(r.body, "(--throttle-polls 1/min)") {
		t.Fatalf("second poll of one device: %d %s", r.status, r.body)
	}
	op2 := second.String("operationId")
	if a := c2.Poll("2", op2); a.Status != http.StatusOK {
		t.Fatalf("first MQTT poll: %s %s", a.Topic, a.Raw)
	}
	if a := c2.Poll("3", op2); a.Status != http.StatusTooManyRequests || a.Number("errorCode") != 429001 {
		t.Fatalf("second MQTT poll: %s %s", a.Topic, a.Raw)
	}

	tok := ownerToken(t, srv)
	for i := range 3 {
		if r := serviceCall(t, srv, http.MethodGet, "/settings", tok); r.status != http.StatusOK {
			t.Fatalf("service request %d: %d %s", i+1, r.status, r.body)
		}
	}
	if r := serviceCall(t, srv, http.MethodGet, "/settings", tok); r.status != http.StatusTooManyRequests ||
		r.header.Get("Retry-After") == "" || !strings.Contains(r.body, "(--throttle-service 3/min)") {
		t.Fatalf("fourth service request: %d %s", r.status, r.body)
	}

	// Throttled answers are in the refusal journal, as refusals are.
	waitFor(t, "the journal records the throttled registration", func() bool {
		p, err := srv.Store().Refusals(t.Context(), store.RefusalFilter{RegistrationID: "th-3", ErrorCode: 429001}, "", 10)
		return err == nil && len(p.Items) == 1 && strings.Contains(p.Items[0].Reason, "--throttle-registrations 2/min")
	})

	m := metricsText(t, srv)
	for _, want := range []string{
		`dpsd_throttled_total{kind="registrations",transport="https"} 1`,
		`dpsd_throttled_total{kind="registrations",transport="mqtt"} 1`,
		`dpsd_throttled_total{kind="polls",transport="https"} 1`,
		`dpsd_throttled_total{kind="polls",transport="mqtt"} 1`,
		`dpsd_throttled_total{kind="service",transport="https"} 1`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics has no %s", want)
		}
	}
}

// TestFaultInjection: the --fault rules, on both transports: an answer of
// the chosen status, a dropped connection, a late answer, rules scoped to
// registration IDs, to an enrollment group, to polls, with a count. Fault
// injection says so at start and in /healthz.
func TestFaultInjection(t *testing.T) {
	srv := servertest.Start(t, server.Config{MQTTAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", Faults: []string{
		"503,on=register,registration-ids=f503-*,retry-after=3",
		"drop,registration-ids=fdrop-*",
		"500,enrollment-group=grp-faulty",
		"delay=100ms,on=register,registration-ids=fslow-*",
		"429,on=poll,count=1",
	}})
	f := newFleet(t, srv, "grp", "grp-faulty")
	if srv.Logs.Count("FAULT INJECTION IS ON (--fault)") != 1 {
		t.Error("fault injection was not announced at start")
	}
	req, _ := http.NewRequest(http.MethodGet, "https://"+srv.State.DeviceEndpoint+"/healthz", nil)
	var h struct {
		Status         string
		FaultInjection []string
	}
	if err := json.Unmarshal([]byte(roundTrip(t, srv.HTTPClient(t), req).body), &h); err != nil || h.Status != "ok" || len(h.FaultInjection) != 5 ||
		h.FaultInjection[0] != "--fault #1: 503,on=register,registration-ids=f503-*,retry-after=3" {
		t.Fatalf("/healthz: %+v, %v", h, err)
	}

	t.Run("503", func(t *testing.T) {
		r := f.https(t, "grp", "f503-1")
		if e := errorOf(t, r.body); r.status != 503 || r.header.Get("Retry-After") != "3" || e.ErrorCode != 503001 ||
			!strings.Contains(e.Message, "fault injected on purpose by this dpsd (--fault #1:") {
			t.Fatalf("HTTPS: %d Retry-After %q %s", r.status, r.header.Get("Retry-After"), r.body)
		}
		if a := f.mqtt(t, "grp", "f503-2").Register("1", nil); a.Status != 503 || a.RetryAfter != 3 || a.Number("errorCode") != 503001 {
			t.Fatalf("MQTT: %s %s", a.Topic, a.Raw)
		}
	})
	t.Run("drop", func(t *testing.T) {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: srv.Roots, ServerName: "localhost"}}
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequest(http.MethodPut, "https://"+srv.DeviceAddr+"/"+srv.State.IDScope+"/registrations/fdrop-1/register", strings.NewReader("{}"))
		req.Header.Set("Authorization", f.token("grp", "fdrop-1"))
		if resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req); err == nil {
			resp.Body.Close()
			t.Fatalf("HTTPS: answered %d, want the connection dropped", resp.StatusCode)
		}
		c := f.mqtt(t, "grp", "fdrop-2")
		c.Publish(mqtttest.RegisterTopic("1"), nil) // waits for the PUBACK
		c.ExpectClosed(10 * time.Second)
	})
	t.Run("enrollment group", func(t *testing.T) {
		if r := f.https(t, "grp-faulty", "in-faulty-1"); r.status != 500 || !strings.Contains(r.body, "--fault #3: 500,enrollment-group=grp-faulty") {
			t.Fatalf("HTTPS, device of the group: %d %s", r.status, r.body)
		}
		if a := f.mqtt(t, "grp-faulty", "in-faulty-2").Register("1", nil); a.Status != 500 {
			t.Fatalf("MQTT, device of the group: %s %s", a.Topic, a.Raw)
		}
		if r := f.https(t, "grp", "in-ok-1"); r.status != http.StatusAccepted {
			t.Fatalf("device of another group: %d %s", r.status, r.body)
		}
	})
	t.Run("delay, then a poll answered 429 once", func(t *testing.T) {
		r := f.https(t, "grp", "fslow-1")
		if r.status != http.StatusAccepted || operationOf(t, r.body).Status != dps.StatusAssigned {
			t.Fatalf("a late answer: %d %s", r.status, r.body)
		}
		op := operationOf(t, r.body).OperationID
		if p := f.poll(t, "grp", "fslow-1", op); p.status != 429 || p.header.Get("Retry-After") != "2" {
			t.Fatalf("first poll: %d %s", p.status, p.body)
		}
		if p := f.poll(t, "grp", "fslow-1", op); p.status != http.StatusOK {
			t.Fatalf("second poll (count=1 is spent): %d %s", p.status, p.body)
		}
	})
	m := metricsText(t, srv)
	for _, want := range []string{
		`dpsd_faults_injected_total{action="503",operation="register",transport="https"} 1`,
		`dpsd_faults_injected_total{action="503",operation="register",transport="mqtt"} 1`,
		`dpsd_faults_injected_total{action="drop",operation="register",transport="mqtt"} 1`,
		`dpsd_faults_injected_total{action="delay",operation="register",transport="https"} 1`,
		`dpsd_faults_injected_total{action="429",operation="poll",transport="https"} 1`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics has no %s", want)
		}
	}
	if n := strings.Count(metricsText(t, srv), "dpsd_device_refusals_total{"); n != 0 {
		t.Errorf("injected faults were counted as refusals (%d series)", n)
	}
}

// TestFaultsAtRunTime: rules set through the service API (/faults, behind
// ServiceConfig) apply at once on the node that took them and, stored, on
// every other node of the database; DELETE ends them.
func TestFaultsAtRunTime(t *testing.T) {
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			cfg := server.Config{}
			nodes := 1
			if engine == "postgres" {
				cfg.Store, nodes = storetest.PostgresDatabase(t, storetest.PostgresDSN(t)), 2
			}
			a := servertest.Start(t, cfg)
			all := []*servertest.Server{a}
			if nodes == 2 {
				all = append(all, servertest.Start(t, cfg))
			}
			f := newFleet(t, a, "grp")
			tok := ownerToken(t, a)

			bad := serviceSend(t, a, http.MethodPut, "/faults", tok, `{"rules": [{"action": "503", "percent": 20}]}`)
			if bad.status != http.StatusBadRequest || !strings.Contains(bad.body, "percent") {
				t.Fatalf("a rule with an unknown member: %d %s", bad.status, bad.body)
			}
			put := serviceSend(t, a, http.MethodPut, "/faults", tok, `{"rules": [{"action": "503", "registrationIds": "rt-*", "on": "register"}]}`)
			if put.status != http.StatusOK || !strings.Contains(put.body, `"etag"`) {
				t.Fatalf("PUT /faults: %d %s", put.status, put.body)
			}
			if again := serviceSend(t, a, http.MethodPut, "/faults", tok, `{"rules": []}`); again.status != http.StatusOK {
				t.Fatalf("PUT /faults without If-Match replaces: %d %s", again.status, again.body)
			}
			serviceSend(t, a, http.MethodPut, "/faults", tok, `{"rules": [{"action": "503", "registrationIds": "rt-*", "on": "register"}]}`)
			for i, n := range all {
				nf := &fleet{srv: n, keys: f.keys}
				waitFor(t, "node "+string(rune('A'+i))+" applies the rule", func() bool { return nf.https(t, "grp", "rt-1").status == 503 })
				if r := nf.https(t, "grp", "ok-1"); r.status != http.StatusAccepted {
					t.Fatalf("a device the rule does not name: %d %s", r.status, r.body)
				}
			}
			get := serviceCall(t, a, http.MethodGet, "/faults", tok)
			if get.status != http.StatusOK || !strings.Contains(get.body, `"registrationIds":"rt-*"`) {
				t.Fatalf("GET /faults: %d %s", get.status, get.body)
			}
			if del := serviceCall(t, a, http.MethodDelete, "/faults", tok); del.status != http.StatusNoContent {
				t.Fatalf("DELETE /faults: %d %s", del.status, del.body)
			}
			for i, n := range all {
				nf := &fleet{srv: n, keys: f.keys}
				waitFor(t, "node "+string(rune('A'+i))+" drops the rule", func() bool { return nf.https(t, "grp", "rt-1").status == http.StatusAccepted })
			}
			if a.Logs.Count("FAULT INJECTION rules set through the service API") == 0 {
				t.Error("setting rules at run time was not logged as a warning")
			}
		})
	}
}

// waitFor polls cond for up to 15 s: the other nodes read the rules every
// 2 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 15 s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
