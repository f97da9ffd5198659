package e2e_test

// The raw DPS MQTT protocol of the real dpsd binary, seen by the runMosquitto
// command-line clients (Debian mosquitto-clients, MQTT 3.1.1 with -V
// mqttv311).
//
// mosquitto_pub publishes and mosquitto_sub subscribes, each on its own
// connection, and dpsd answers a request on the requesting connection only:
// neither tool alone can see an answer. So:
//
//   - mosquitto_pub sends requests as devices do (an empty register payload
//     with -n, a poll with -m ' '), and the test checks their effect: the
//     PUBACK (mosquitto_pub exits 0 only after it), dpsd's log line for the
//     request and the registration record.
//   - mosquitto_sub observes answers through a small proxy in the test that
//     terminates its TLS, forwards its MQTT session to dpsd and, after the
//     SUBACK, injects a register and then a poll into that same session, as
//     if mosquitto_sub had published them (their PUBACKs are not passed on).
//     mosquitto_sub then receives dpsd's answers as any subscriber would and
//     prints them (-v), with its debug log (-d) showing the QoS, the packet
//     identifier and the PUBACK it sends back.
//   - Refusals (CONNACK codes, SUBACK 0x80 for "#", a topic outside $dps/,
//     96 KB) are what mosquitto_pub/mosquitto_sub print and exit with.
//
// A device connected with the raw Go client (internal/mqtt/mqtttest) for
// the whole test must still register at the end.

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dpsd/dpsd/client"
	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/mqtt"
	"github.com/dpsd/dpsd/internal/mqtt/mqtttest"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/svcclient"
	"github.com/dpsd/dpsd/test/e2e"
)

func runMosquitto(t *testing.T, tool string, args ...string) (string, error) {
	t.Helper()
	path, err := exec.LookPath(tool)
	if err != nil {
		t.Fatalf("%s is not installed (%v): apt-get install mosquitto-clients", tool, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, args...).CombinedOutput()
	return string(out), err
}

func TestMQTTMosquitto(t *testing.T) {
	t.Parallel()
	s, endpoint := startMQTTServer(t, false, "--azure-strict")
	_, port, _ := net.SplitHostPort(endpoint)
	good, _ := enrollMQTTDevices(t, s)
	sym, x509Self := good[2], good[0]
	key := mqttDecodeKey(t, sym.SymmetricKey)
	sasToken := client.SASToken(s.IDScope, sym.ID, key, time.Now().Add(time.Hour))
	user := func(id string) string { return s.IDScope + "/registrations/" + id + "/api-version=2019-03-31" }
	base := []string{"-V", "mqttv311", "-h", "localhost", "-p", port, "--cafile", s.CAFile}
	symArgs := append(append([]string{}, base...), "-i", sym.ID, "-u", user(sym.ID), "-P", sasToken)

	// A device connected all along.
	caPEM, err := os.ReadFile(s.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	bystanderTLS := &tls.Config{RootCAs: roots, ServerName: "localhost"}
	bystander := mqtttest.DialTLS(t, "127.0.0.1:"+port, bystanderTLS)
	good3 := good[3]
	bystander.MustConnect(s.IDScope, good3.ID, client.SASToken(s.IDScope, good3.ID, mqttDecodeKey(t, good3.SymmetricKey), time.Now().Add(time.Hour)))
	bystander.Subscribe(1, mqtt.ResponseFilter)

	var opID string
	t.Run("register with an empty payload", func(t *testing.T) {
		out, err := runMosquitto(t, "mosquitto_pub", append(symArgs, "-q", "1", "-t", "$dps/registrations/PUT/iotdps-register/?$rid=1", "-n")...)
		if err != nil {
			t.Fatalf("mosquitto_pub: %v\n%s", err, out)
		}
		mqttWaitLog(t, s, `msg="mqtt request" transport=mqtt remote=`, `request=register rid=1 operationId="" payloadBytes=0 status=202 subscribed=false`)
		m := regexp.MustCompile(`msg=registration trackingId=\S+ transport=mqtt registrationId=mqtt-sym enrollment="enrollment \\"mqtt-sym\\"" status=assigned operationId=(\S+)`).FindStringSubmatch(s.Logs())
		if m == nil {
			t.Fatalf("no registration of mqtt-sym in the log:\n%s", s.Logs())
		}
		opID = m[1]
		mqttCheckRecord(t, s, sym.ID)
	})
	t.Run("register with a client certificate", func(t *testing.T) {
		args := append(append([]string{}, base...), "--cert", x509Self.Cert, "--key", x509Self.Key, "-i", x509Self.ID, "-u", user(x509Self.ID),
			"-q", "1", "-t", "$dps/registrations/PUT/iotdps-register/?$rid=7", "-m", `{"registrationId":"mqtt-x509-self"}`)
		if out, err := runMosquitto(t, "mosquitto_pub", args...); err != nil {
			t.Fatalf("mosquitto_pub: %v\n%s", err, out)
		}
		// dpsd PUBACKs a request before it handles it.
		mqttWaitLog(t, s, `request=register rid=7 operationId="" payloadBytes=35 status=202`)
		mqttCheckRecord(t, s, x509Self.ID)
	})
	t.Run("poll with a single space", func(t *testing.T) {
		if opID == "" {
			t.Fatal("the register step failed, so there is no operation to poll")
		}
		out, err := runMosquitto(t, "mosquitto_pub", append(symArgs, "-q", "1", "-t", "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId="+opID, "-m", " ")...)
		if err != nil {
			t.Fatalf("mosquitto_pub: %v\n%s", err, out)
		}
		mqttWaitLog(t, s, `request=operationstatus rid=2 operationId=`+opID+` payloadBytes=1 status=200`)
	})
	t.Run("answers seen by mosquitto_sub", func(t *testing.T) {
		inj := mqttStartInjector(t, "127.0.0.1:"+port, roots)
		args := []string{"-V", "mqttv311", "-h", "localhost", "-p", inj.port, "--cafile", inj.caFile, "-i", sym.ID, "-u", user(sym.ID), "-P", sasToken,
			"-t", "$dps/registrations/res/#", "-q", "1", "-v", "-d", "-C", "2", "-W", "30"}
		out, err := runMosquitto(t, "mosquitto_sub", args...)
		if err != nil {
			t.Fatalf("mosquitto_sub: %v\n%s", err, out)
		}
		t.Logf("mosquitto_sub:\n%s", out)
		rid := inj.registerRID
		// Strict mode: register answers 202 assigning with retry-after;
		// the poll answers 200 assigned. Topics exactly, $rid first and
		// verbatim (a UUID, then an integer).
		want := []*regexp.Regexp{
			regexp.MustCompile(`(?m)^Client \S+ received PUBLISH \(d0, q1, r0, m(\d+), '\$dps/registrations/res/202/\?\$rid=` + regexp.QuoteMeta(rid) + `&retry-after=3', \.\.\. \(\d+ bytes\)\)$`),
			regexp.MustCompile(`(?m)^\$dps/registrations/res/202/\?\$rid=` + regexp.QuoteMeta(rid) + `&retry-after=3 \{"operationId":"[^"]+","status":"assigning"\}$`),
			regexp.MustCompile(`(?m)^Client \S+ received PUBLISH \(d0, q1, r0, m(\d+), '\$dps/registrations/res/200/\?\$rid=42', \.\.\. \(\d+ bytes\)\)$`),
			regexp.MustCompile(`(?m)^\$dps/registrations/res/200/\?\$rid=42 \{"operationId":"[^"]+","status":"assigned","registrationState":\{.*"assignedHub":"` + mqttHub + `".*\}\}$`),
			regexp.MustCompile(`(?m)^Client \S+ sending PUBACK \(m1, rc0\)$`),
			regexp.MustCompile(`(?m)^Client \S+ sending PUBACK \(m2, rc0\)$`),
			regexp.MustCompile(`(?m)^Client \S+ received SUBACK$`),
			regexp.MustCompile(`(?m)^Subscribed \(mid: 1\): 1$`),
		}
		for _, re := range want {
			if !re.MatchString(out) {
				t.Errorf("mosquitto_sub output does not match %s", re)
			}
		}
		if n := inj.pubacks(); n != 2 {
			t.Errorf("dpsd received %d PUBACKs from mosquitto_sub, want 2", n)
		}
	})
	t.Run("subscribe to #", func(t *testing.T) {
		out, err := runMosquitto(t, "mosquitto_sub", append(symArgs, "-t", "#", "-q", "1", "-d", "-W", "5")...)
		// mosquitto_sub 2.0 gives up (exit 0) when every filter is refused.
		if !strings.Contains(out, "Subscribed (mid: 1): 128") || !strings.Contains(out, "All subscription requests were denied.") {
			t.Errorf("mosquitto_sub -t '#': %v\n%s", err, out)
		}
	})
	t.Run("refused at CONNACK", func(t *testing.T) {
		for name, tc := range map[string]struct {
			args []string
			want string
		}{
			"malformed user name": {append(append([]string{}, base...), "-i", sym.ID, "-u", s.IDScope+"/"+sym.ID, "-P", sasToken), "Connection Refused: bad user name or password"},
			"no api-version":      {append(append([]string{}, base...), "-i", sym.ID, "-u", s.IDScope+"/registrations/"+sym.ID+"/", "-P", sasToken), "Connection Refused: bad user name or password"},
			"wrong client id":     {append(append([]string{}, base...), "-i", "someone-else", "-u", user(sym.ID), "-P", sasToken), "Connection Refused: identifier rejected"},
		} {
			out, err := runMosquitto(t, "mosquitto_pub", append(tc.args, "-q", "1", "-t", "$dps/registrations/PUT/iotdps-register/?$rid=1", "-n")...)
			if err == nil || !strings.Contains(out, tc.want) {
				t.Errorf("%s: %v\n%s", name, err, out)
			}
		}
	})
	t.Run("publish outside $dps", func(t *testing.T) {
		out, err := runMosquitto(t, "mosquitto_pub", append(symArgs, "-q", "1", "-t", "devices/mqtt-sym/messages/events/", "-m", "hello")...)
		if err == nil {
			t.Errorf("mosquitto_pub succeeded:\n%s", out)
		}
		mqttWaitLog(t, s, `PUBLISH to \"devices/mqtt-sym/messages/events/\": devices publish only to`)
	})
	t.Run("payload over 96 KB", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "big.json")
		os.WriteFile(f, []byte(`{"payload":"`+strings.Repeat("a", dps.MaxMessageBytes)+`"}`), 0o644)
		out, err := runMosquitto(t, "mosquitto_pub", append(symArgs, "-q", "1", "-t", "$dps/registrations/PUT/iotdps-register/?$rid=9", "-f", f)...)
		if err == nil {
			t.Errorf("mosquitto_pub succeeded:\n%s", out)
		}
		mqttWaitLog(t, s, `exceeds the 96 KB limit`)
	})
	t.Run("the device connected all along", func(t *testing.T) {
		a := bystander.Register("after", nil)
		if a.Status != 202 || a.String("status") != "assigning" {
			t.Errorf("%s %s", a.Topic, a.Raw)
		}
	})
	metrics := mqttHTTPGet(t, s, roots, "/metrics")
	for _, m := range []string{
		`dpsd_mqtt_refusals_total{reason="subscription_refused",transport="mqtt"} 1`,
		`dpsd_mqtt_refusals_total{reason="topic_not_allowed",transport="mqtt"} 1`,
		`dpsd_mqtt_refusals_total{reason="packet_too_large",transport="mqtt"} 1`,
		`dpsd_mqtt_refusals_total{reason="identifier_rejected",transport="mqtt"} 1`,
		`dpsd_mqtt_refusals_total{reason="bad_username",transport="mqtt"} 2`,
		`dpsd_registrations_total{attestation="symmetricKey",outcome="assigned",transport="mqtt"}`,
		`dpsd_mqtt_requests_total{request="operationstatus",status="200",transport="mqtt"}`,
	} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics has no %s", m)
		}
	}
}

func mqttDecodeKey(t *testing.T, b64 string) []byte {
	t.Helper()
	k, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mqttWaitLog(t *testing.T, s *e2e.Server, parts ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		logs := s.Logs()
		all := true
		for _, p := range parts {
			all = all && strings.Contains(logs, p)
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server log does not contain %q:\n%s", parts, logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// mqttCheckRecord asserts through the service API that the device is assigned.
func mqttCheckRecord(t *testing.T, s *e2e.Server, id string) {
	t.Helper()
	var st dps.DeviceRegistrationState
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.Client(t).Do(ctx, svcclient.Request{Method: http.MethodGet, Path: "/registrations/" + id}, &st); err != nil {
		t.Fatalf("registration state of %s: %v", id, err)
	}
	if st.Status != dps.StatusAssigned || st.AssignedHub != mqttHub {
		t.Errorf("registration state of %s: %+v", id, st)
	}
}

func mqttHTTPGet(t *testing.T, s *e2e.Server, roots *x509.CertPool, path string) string {
	t.Helper()
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	resp, err := hc.Get("https://" + s.DeviceEndpoint + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		b.WriteString(sc.Text() + "\n")
	}
	return b.String()
}

// mqttInjector is the proxy between mosquitto_sub and dpsd (see the top of the
// file).
type mqttInjector struct {
	port        string
	caFile      string
	registerRID string

	mu      sync.Mutex
	nPuback int
}

func (in *mqttInjector) pubacks() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.nPuback
}

func mqttStartInjector(t *testing.T, dpsdAddr string, dpsdRoots *x509.CertPool) *mqttInjector {
	t.Helper()
	ca, caKey, err := pki.NewRootCA(pki.Options{CommonName: "Injector CA"})
	if err != nil {
		t.Fatal(err)
	}
	leaf, leafKey, err := pki.NewLeaf(pki.Options{CommonName: "localhost", Hosts: []string{"localhost", "127.0.0.1", "::1"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, ca, caKey)
	if err != nil {
		t.Fatal(err)
	}
	in := &mqttInjector{caFile: filepath.Join(t.TempDir(), "injector-ca.pem"), registerRID: dps.NewUUID()}
	mqttMust(t, os.WriteFile(in.caFile, pki.EncodePEM(ca), 0o644))
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Raw}, PrivateKey: leafKey}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	_, in.port, _ = net.SplitHostPort(ln.Addr().String())
	go func() {
		down, err := ln.Accept()
		if err != nil {
			return
		}
		defer down.Close()
		up, err := tls.Dial("tcp", dpsdAddr, &tls.Config{RootCAs: dpsdRoots, ServerName: "localhost"})
		if err != nil {
			t.Errorf("injector: dialing dpsd: %v", err)
			return
		}
		defer up.Close()
		in.run(t, down, up)
	}()
	return in
}

const mqttInjectedID1, mqttInjectedID2 = 0xbee1, 0xbee2

func (in *mqttInjector) run(t *testing.T, down, up net.Conn) {
	var upMu sync.Mutex
	send := func(p mqtt.Packet) error {
		upMu.Lock()
		defer upMu.Unlock()
		_, err := up.Write(p.Encode(nil))
		return err
	}
	done := make(chan struct{})
	// mosquitto_sub → dpsd: everything, counting its PUBACKs.
	go func() {
		defer close(done)
		br := bufio.NewReader(down)
		for {
			p, err := mqtt.ReadPacket(br, 1<<20)
			if err != nil {
				return
			}
			if a, ok := p.(*mqtt.Ack); ok && mqtt.TypeName(a) == "puback" {
				in.mu.Lock()
				in.nPuback++
				in.mu.Unlock()
			}
			if send(p) != nil {
				return
			}
		}
	}()
	// dpsd → mosquitto_sub: everything but the PUBACKs of injected
	// requests; the SUBACK triggers the register, its answer the poll.
	br := bufio.NewReader(up)
	for {
		p, err := mqtt.ReadPacket(br, 1<<20)
		if err != nil {
			break
		}
		if a, ok := p.(*mqtt.Ack); ok && (a.PacketID == mqttInjectedID1 || a.PacketID == mqttInjectedID2) {
			continue
		}
		if _, err := down.Write(p.Encode(nil)); err != nil {
			break
		}
		switch p := p.(type) {
		case *mqtt.Suback:
			send(&mqtt.Publish{QoS: 1, PacketID: mqttInjectedID1, Topic: "$dps/registrations/PUT/iotdps-register/?$rid=" + in.registerRID, Payload: []byte{}})
		case *mqtt.Publish:
			if strings.Contains(p.Topic, "$rid="+in.registerRID) {
				var op dps.RegistrationOperationStatus
				if err := json.Unmarshal(p.Payload, &op); err != nil || op.OperationID == "" {
					t.Errorf("injector: the register answer %q has no operationId", p.Payload)
					break
				}
				send(&mqtt.Publish{QoS: 1, PacketID: mqttInjectedID2, Topic: fmt.Sprintf("$dps/registrations/GET/iotdps-get-operationstatus/?$rid=42&operationId=%s", op.OperationID), Payload: []byte(" ")})
			}
		}
	}
	<-done
}
