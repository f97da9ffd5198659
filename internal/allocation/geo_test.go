package allocation

import (
	"context"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
)

func TestGeoLatency(t *testing.T) {
	ms := time.Millisecond
	hubs := []Hub{
		{Name: "eu1", Weight: 1, Location: "West Europe"},
		{Name: "eu2", Weight: 3, Location: "westeurope"},
		{Name: "us1", Weight: 1, Location: "eastus"},
		{Name: "as1", Weight: 1, Location: "japaneast"},
	}
	rtt := func(m map[string]time.Duration) func(string) (time.Duration, bool) {
		return func(h string) (time.Duration, bool) { d, ok := m[h]; return d, ok }
	}
	tests := map[string]struct {
		geo Geo
		// want is the set the device's hub is hashed within.
		want []string
	}{
		"location/one hub there":           {geo: Geo{Location: "eastus"}, want: []string{"us1"}},
		"location/spellings match":         {geo: Geo{Location: "west-europe"}, want: []string{"eu1", "eu2"}},
		"location/wins over rtt":           {geo: Geo{Location: "japaneast", RTT: rtt(map[string]time.Duration{"us1": ms})}, want: []string{"as1"}},
		"location/none there, rtt decides": {geo: Geo{Location: "brazilsouth", RTT: rtt(map[string]time.Duration{"us1": 5 * ms, "as1": 90 * ms})}, want: []string{"us1"}},
		"rtt/lowest":                       {geo: Geo{RTT: rtt(map[string]time.Duration{"eu1": 40 * ms, "us1": 9 * ms, "as1": 200 * ms})}, want: []string{"us1"}},
		"rtt/near tie shares":              {geo: Geo{RTT: rtt(map[string]time.Duration{"eu1": 10 * ms, "eu2": 11 * ms, "us1": 30 * ms})}, want: []string{"eu1", "eu2"}},
		"rtt/tenth of best is a tie":       {geo: Geo{RTT: rtt(map[string]time.Duration{"eu1": 100 * ms, "us1": 109 * ms, "as1": 111 * ms})}, want: []string{"eu1", "us1"}},
		"rtt/unmeasured hubs passed over":  {geo: Geo{RTT: rtt(map[string]time.Duration{"as1": 300 * ms})}, want: []string{"as1"}},
		"no data/hashed over all":          {geo: Geo{}, want: []string{"eu1", "eu2", "us1", "as1"}},
		"no data/rtt knows nothing":        {geo: Geo{RTT: rtt(nil)}, want: []string{"eu1", "eu2", "us1", "as1"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var set []Hub
			for _, h := range hubs {
				if slices.Contains(tc.want, h.Name) {
					set = append(set, h)
				}
			}
			seen := map[string]bool{}
			for i := range 200 {
				id := fmt.Sprintf("device-%d", i)
				got := GeoLatency(hubs, tc.geo, id)
				if want := Hashed(set, id); got != want {
					t.Fatalf("%s: got %s, want %s (hashed within %v)", id, got, want, tc.want)
				}
				seen[got] = true
			}
			if len(seen) != len(tc.want) {
				t.Fatalf("200 devices reached %v, want all of %v", seen, tc.want)
			}
		})
	}
}

func TestGeoSelect(t *testing.T) {
	two := []Hub{{Name: "a", Weight: 1, Location: "x"}, {Name: "b", Weight: 1, Location: "y"}}
	g := Geo{Location: "y"}
	if h, f := g.Select(dps.AllocationGeoLatency, two, "d"); f != nil || h != "b" {
		t.Fatalf("geoLatency: %q %v", h, f)
	}
	if h, f := g.Select(dps.AllocationHashed, two, "d"); f != nil || h != Hashed(two, "d") {
		t.Fatalf("hashed: %q %v", h, f)
	}
	if _, f := g.Select(dps.AllocationStatic, two, "d"); f == nil || f.Code != dpserr.CodeNoHub {
		t.Fatalf("static with two hubs: %v", f)
	}
	if _, f := g.Select(dps.AllocationGeoLatency, nil, "d"); f == nil || f.Code != dpserr.CodeNoHub {
		t.Fatalf("geoLatency without hubs: %v", f)
	}
}

func TestProbeAddr(t *testing.T) {
	for in, want := range map[string]string{
		"hub.azure-devices.net": "hub.azure-devices.net:443",
		"hub.local:9443":        "hub.local:9443",
		"127.0.0.1:8883":        "127.0.0.1:8883",
	} {
		if got := ProbeAddr(in); got != want {
			t.Errorf("ProbeAddr(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestProber(t *testing.T) {
	listen := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		return l.Addr().String()
	}
	a, b := listen(), listen()
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := l.Addr().String()
	l.Close()

	targets := []ProbeTarget{{"Hub-A", a}, {"hub-b", b}, {"hub-c", closed}}
	p := &Prober{Targets: func() []ProbeTarget { return targets }, Timeout: 5 * time.Second}
	p.ProbeOnce(context.Background())
	for _, h := range []string{"hub-a", "HUB-B"} {
		if d, ok := p.RTT(h); !ok || d <= 0 {
			t.Fatalf("RTT(%s) = %v %v, want a measurement", h, d, ok)
		}
	}
	if _, ok := p.RTT("hub-c"); ok {
		t.Fatal("a hub that refuses connections has no RTT")
	}
	g := Geo{RTT: p.RTT}
	if got := GeoLatency([]Hub{{Name: "hub-c", Weight: 100}, {Name: "hub-a", Weight: 1}}, g, "d"); got != "hub-a" {
		t.Fatalf("GeoLatency chose %s over the only reachable hub", got)
	}

	// A hub no longer linked is forgotten at the next round.
	targets = targets[1:]
	p.ProbeOnce(context.Background())
	if _, ok := p.RTT("hub-a"); ok {
		t.Fatal("hub-a is no longer a target but keeps its RTT")
	}

	// Run stops when its context ends.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}
