package e2e_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dpsd/dpsd/client"
	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/store/storetest"
	"github.com/dpsd/dpsd/internal/testutil"
	"github.com/dpsd/dpsd/test/e2e"
)

// TestMultiNodeKillMidLoad registers many symmetric-key devices with the Go
// device client through a TCP load balancer in front of two nodes, and
// kills one node with SIGKILL while they register. The client retries, the
// balancer sends it to the surviving node, and in the end: every device is
// assigned, every registration a device was told about has its record (the
// one it was told about), and no operation is left "assigning".
func TestMultiNodeKillMidLoad(t *testing.T) {
	t.Parallel()
	nodes, dsn := mnCluster(t, 2)
	a, b := nodes[0], nodes[1]
	mnLinkHub(t, a)
	groupKey := mnGroup(t, b, "fleet")
	lb := storetest.NewProxy(t, mnLocalAddr(a.DeviceEndpoint), mnLocalAddr(b.DeviceEndpoint))
	roots := mnRoots(t, a)

	const devices, workers, killAfter = 240, 12, 60
	type ack struct {
		etag, hub string
	}
	acks := make([]*ack, devices)
	var acked atomic.Int32
	killed := make(chan struct{})
	var killOnce sync.Once
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	errs := make(chan error, devices)
	testutil.Spread(devices, workers, func(i int) {
		id := fmt.Sprintf("dev-%04d", i)
		st, err := client.Register(ctx, client.Config{
			// The balancer's address, under the name the server
			// certificate covers.
			Endpoint:       "localhost:" + lb.Addr()[len("127.0.0.1:"):],
			IDScope:        a.IDScope,
			RegistrationID: id,
			SymmetricKey:   client.DeriveKey(groupKey, id),
			RootCAs:        roots,
		})
		if err != nil {
			errs <- fmt.Errorf("%s: %w", id, err)
			return
		}
		acks[i] = &ack{etag: st.Etag, hub: st.AssignedHub}
		if acked.Add(1) == killAfter {
			killOnce.Do(func() { a.Kill(); close(killed) })
		}
	})
	close(errs)
	for err := range errs {
		t.Errorf("a device did not register: %v", err)
	}
	select {
	case <-killed:
	default:
		t.Fatal("node A was never killed")
	}
	if t.Failed() {
		t.FailNow()
	}
	servedByA := mnLogLines(a, `msg=registration`, "status=assigned")
	servedByB := mnLogLines(b, `msg=registration`, "status=assigned")
	t.Logf("%d devices: %d assignments by A before it was killed, %d by B", devices, servedByA, servedByB)
	if servedByA == 0 || servedByB == 0 {
		t.Fatalf("A assigned %d, B %d: both nodes must have served", servedByA, servedByB)
	}

	// Every acknowledged registration has its record, as acknowledged; B
	// alone serves the service API too.
	for i, k := range acks {
		id := fmt.Sprintf("dev-%04d", i)
		var rec dps.DeviceRegistrationState
		mnMust(t, mnService(t, b, http.MethodGet, "/registrations/"+id, "", nil, &rec), "record of "+id)
		if rec.Etag != k.etag || rec.AssignedHub != k.hub || rec.Status != dps.StatusAssigned {
			t.Fatalf("%s: record etag %s hub %s status %s; the device was told etag %s hub %s", id, rec.Etag, rec.AssignedHub, rec.Status, k.etag, k.hub)
		}
	}
	db := mnDB(t, dsn)
	if n := mnCount(t, db, `SELECT COUNT(*) FROM registrations`); n != devices {
		t.Fatalf("%d records, want %d", n, devices)
	}
	if n := mnCount(t, db, `SELECT COUNT(*) FROM operations WHERE status = $1`, dps.StatusAssigning); n != 0 {
		t.Fatalf("%d operations are left assigning", n)
	}
}

// TestMultiNodeDatabaseOutage takes the database away from one node (its
// connections go through a proxy the test cuts): the node answers 503 with
// Retry-After, /healthz says 503, the outage is logged once rather than per
// request, the other node keeps serving, and the node recovers by itself
// when the database is back.
func TestMultiNodeDatabaseOutage(t *testing.T) {
	t.Parallel()
	dsn := mnDatabase(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	proxy := storetest.NewProxy(t, u.Host)
	u.Host = proxy.Addr()
	a := e2e.StartServer(t, "--store", u.String(), "--store-timeout", "3s")
	b := e2e.StartServer(t, "--store", dsn)
	mnSameInstance(t, a, b)
	mnLinkHub(t, a)
	groupKey := mnGroup(t, a, "fleet")
	device := func(id string) *mnDevice { return mnNewDevice(t, a, id, client.DeriveKey(groupKey, id)) }
	health := func(s *e2e.Server) int {
		d := device("health")
		resp, err := d.http.Get("https://" + s.DeviceEndpoint + "/healthz")
		if err != nil {
			t.Fatalf("GET /healthz: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if reg := device("before").register(t, a.DeviceEndpoint); reg.str("status") != dps.StatusAssigned {
		t.Fatalf("register before the outage: %d %s", reg.status, reg.raw)
	}

	proxy.Cut()
	start := time.Now()
	for i := range 20 {
		reg := device(fmt.Sprintf("during-%d", i)).register(t, a.DeviceEndpoint)
		if reg.status != http.StatusServiceUnavailable || reg.retryAfter == "" || reg.body["errorCode"] != float64(503001) {
			t.Fatalf("register during the outage: %d (Retry-After %q) %s", reg.status, reg.retryAfter, reg.raw)
		}
	}
	if err := mnService(t, a, http.MethodGet, "/enrollmentgroups/fleet", "", nil, nil); mnStatus(err) != http.StatusServiceUnavailable {
		t.Fatalf("service API during the outage: %v, want 503", err)
	}
	if got := health(a); got != http.StatusServiceUnavailable {
		t.Fatalf("/healthz during the outage: %d", got)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("22 requests during the outage took %s; they should fail fast", d)
	}
	// The other node has its own connections and serves on.
	if reg := device("elsewhere").register(t, b.DeviceEndpoint); reg.str("status") != dps.StatusAssigned {
		t.Fatalf("register on B during A's outage: %d %s", reg.status, reg.raw)
	}
	if got := health(b); got != http.StatusOK {
		t.Fatalf("B's /healthz during A's outage: %d", got)
	}

	proxy.Restore()
	deadline := time.Now().Add(15 * time.Second)
	for health(a) != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatalf("A did not recover within 15 s of the database's return; its log:\n%s", a.Logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if reg := device("after").register(t, a.DeviceEndpoint); reg.str("status") != dps.StatusAssigned {
		t.Fatalf("register after the outage: %d %s", reg.status, reg.raw)
	}

	// One line for the outage and one for the recovery, not one per
	// request; request lines at Error level are rate-limited too.
	// The log is copied asynchronously; the recovery line is the last of them.
	for deadline := time.Now().Add(10 * time.Second); mnLogLines(a, "database available again") == 0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	if n := mnLogLines(a, "database unavailable"); n != 1 {
		t.Errorf("%d outage lines, want 1; the log:\n%s", n, a.Logs())
	}
	if n := mnLogLines(a, "database available again"); n != 1 {
		t.Errorf("%d recovery lines, want 1; the log:\n%s", n, a.Logs())
	}
	if n := mnLogLines(a, "level=ERROR", "request refused", "status=503"); n < 1 || n > 2 {
		t.Errorf("%d request lines at level ERROR for 21 refused requests, want 1 or 2; the log:\n%s", n, a.Logs())
	}
}
