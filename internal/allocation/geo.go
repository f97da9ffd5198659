package allocation

import (
	"context"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
)

// NearTie is the round-trip time difference below which two hubs count as
// equally near (a tenth of the best time counts too, when larger): such
// hubs share the devices by weighted hashing instead of one taking them
// all because of measurement noise.
const NearTie = 2 * time.Millisecond

// Geo is what geoLatency allocation knows about where this node is.
type Geo struct {
	// Location is the node's own location (dpsd serve --location), in the
	// form the linked hubs' locations use, e.g. "westeurope".
	Location string
	// RTT returns the measured round-trip time to a hub (by name), if
	// there is one; a Prober's RTT method. May be nil.
	RTT func(hub string) (time.Duration, bool)
}

// Select applies a policy like the package's Select, and geoLatency too.
func (g Geo) Select(policy string, candidates []Hub, registrationID string) (string, *Failure) {
	if policy != dps.AllocationGeoLatency {
		return Select(policy, candidates, registrationID)
	}
	if len(candidates) == 0 {
		return "", &Failure{dpserr.CodeNoHub, "geoLatency allocation has no candidate hub"}
	}
	return GeoLatency(candidates, g, registrationID), nil
}

// GeoLatency picks the nearest hub: among the candidates in the node's own
// location, if any; else among those with the lowest measured round-trip
// time (within NearTie), ignoring hubs not measured; with neither, among
// all. Within the chosen set, weighted hashing of the registration ID
// decides, so a device keeps its hub while nothing changes.
func GeoLatency(candidates []Hub, g Geo, registrationID string) string {
	if loc := normLocation(g.Location); loc != "" {
		var local []Hub
		for _, h := range candidates {
			if normLocation(h.Location) == loc {
				local = append(local, h)
			}
		}
		if len(local) > 0 {
			return Hashed(local, registrationID)
		}
	}
	if g.RTT != nil {
		rtts := make([]time.Duration, len(candidates))
		best := time.Duration(-1)
		for i, h := range candidates {
			rtts[i] = -1
			if d, ok := g.RTT(h.Name); ok {
				rtts[i] = d
				if best < 0 || d < best {
					best = d
				}
			}
		}
		if best >= 0 {
			limit := best + max(NearTie, best/10)
			var near []Hub
			for i, h := range candidates {
				if rtts[i] >= 0 && rtts[i] <= limit {
					near = append(near, h)
				}
			}
			return Hashed(near, registrationID)
		}
	}
	return Hashed(candidates, registrationID)
}

// normLocation lets "West Europe", "westeurope" and "west-europe" match.
func normLocation(s string) string {
	return strings.ToLower(locationSeparators.Replace(s))
}

var locationSeparators = strings.NewReplacer(" ", "", "-", "", "_", "")

// ProbeTarget is a hub and the TCP address a Prober connects to.
type ProbeTarget struct {
	Hub  string
	Addr string // host:port
}

// ProbeAddr is the address of a hub host name that may carry a port
// (HostName=hub.local:9443); without one, HTTPS's 443.
func ProbeAddr(hostName string) string {
	if _, _, err := net.SplitHostPort(hostName); err == nil {
		return hostName
	}
	return net.JoinHostPort(hostName, "443")
}

// Prober measures the TCP connect time to each hub, periodically. A
// connect time is one round trip, and needs no credentials or protocol.
// Measurements are smoothed; a hub that cannot be reached has none, so
// GeoLatency passes it over while others answer.
type Prober struct {
	// Targets returns the hubs to probe; called at every round, so linked
	// hubs added or removed are followed.
	Targets func() []ProbeTarget
	// Interval between rounds (default one minute) and Timeout of one
	// connect (default three seconds).
	Interval, Timeout time.Duration

	mu  sync.RWMutex
	rtt map[string]time.Duration
}

// Run probes at once, then every Interval, until ctx ends.
func (p *Prober) Run(ctx context.Context) {
	interval := p.Interval
	if interval <= 0 {
		interval = time.Minute
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		p.ProbeOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ProbeOnce probes every target once, concurrently.
func (p *Prober) ProbeOnce(ctx context.Context) {
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = 3 * time.Second
	}
	targets := p.Targets()
	samples := make([]time.Duration, len(targets))
	var wg sync.WaitGroup
	for i, tg := range targets {
		wg.Go(func() {
			d := net.Dialer{Timeout: timeout}
			start := time.Now()
			c, err := d.DialContext(ctx, "tcp", tg.Addr)
			if err != nil {
				samples[i] = -1
				return
			}
			samples[i] = max(time.Since(start), time.Microsecond)
			c.Close()
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return // a cut-short round measures nothing
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	next := make(map[string]time.Duration, len(targets))
	for i, tg := range targets {
		if samples[i] < 0 {
			continue
		}
		k := strings.ToLower(tg.Hub)
		if old, ok := p.rtt[k]; ok {
			next[k] = (old*7 + samples[i]*3) / 10
		} else {
			next[k] = samples[i]
		}
	}
	p.rtt = next
}

// RTT returns the smoothed round-trip time to a hub, if measured.
func (p *Prober) RTT(hub string) (time.Duration, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	d, ok := p.rtt[strings.ToLower(hub)]
	return d, ok
}
