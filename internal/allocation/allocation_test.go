package allocation

import (
	"fmt"
	"math"
	"testing"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/store"
)

func TestCandidates(t *testing.T) {
	linked := []*store.LinkedHub{
		{Name: "a.azure-devices.net", AllocationWeight: 1, ApplyAllocationPolicy: true},
		{Name: "B.azure-devices.net", AllocationWeight: 5, ApplyAllocationPolicy: true},
		{Name: "c.azure-devices.net", AllocationWeight: 2, ApplyAllocationPolicy: false},
	}
	tests := map[string]struct {
		hubs     []string
		legacy   string
		linked   []*store.LinkedHub
		want     []string
		failCode int
	}{
		"ok/all linked that apply the policy":  {linked: linked, want: []string{"a.azure-devices.net", "B.azure-devices.net"}},
		"ok/enrollment hubs, case-insensitive": {hubs: []string{"b.azure-devices.net", "c.azure-devices.net"}, linked: linked, want: []string{"B.azure-devices.net", "c.azure-devices.net"}},
		"ok/unlinked enrollment hub dropped":   {hubs: []string{"x.azure-devices.net", "a.azure-devices.net"}, linked: linked, want: []string{"a.azure-devices.net"}},
		"ok/legacy iotHubHostName":             {legacy: "c.azure-devices.net", linked: linked, want: []string{"c.azure-devices.net"}},
		"fail/nothing linked":                  {failCode: dpserr.CodeHubNotFound},
		"fail/enrollment hub not linked":       {hubs: []string{"x.azure-devices.net"}, linked: linked, failCode: dpserr.CodeHubNotFound},
		"fail/no hub applies the policy":       {linked: linked[2:], failCode: dpserr.CodeHubNotFound},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, f := Candidates(tc.hubs, tc.legacy, tc.linked)
			if tc.failCode != 0 {
				if f == nil || f.Code != tc.failCode {
					t.Fatalf("failure = %v, want code %d", f, tc.failCode)
				}
				if f.Message[:16] != "IoTHub not found" {
					t.Fatalf("message %q does not start with Azure's text", f.Message)
				}
				return
			}
			if f != nil {
				t.Fatal(f)
			}
			if fmt.Sprint(names(got)) != fmt.Sprint(names(hubsOf(tc.want))) {
				t.Fatalf("got %s, want %v", names(got), tc.want)
			}
		})
	}
}

func hubsOf(ns []string) []Hub {
	var hs []Hub
	for _, n := range ns {
		hs = append(hs, Hub{Name: n})
	}
	return hs
}

func TestSelect(t *testing.T) {
	one := []Hub{{Name: "a", Weight: 1}}
	two := []Hub{{Name: "a", Weight: 1}, {Name: "b", Weight: 1}}
	if h, f := Select(dps.AllocationStatic, one, "d"); f != nil || h != "a" {
		t.Fatalf("static one: %q %v", h, f)
	}
	if _, f := Select(dps.AllocationStatic, two, "d"); f == nil || f.Code != dpserr.CodeNoHub {
		t.Fatalf("static two: %v", f)
	}
	for _, p := range []string{dps.AllocationCustom, dps.AllocationGeoLatency} {
		if _, f := Select(p, two, "d"); f == nil {
			t.Fatalf("%s: no failure", p)
		}
	}
	if h, f := Select("", two, "d"); f != nil || (h != "a" && h != "b") {
		t.Fatalf("default: %q %v", h, f)
	}
}

// TestHashedDistribution checks that hashed allocation is deterministic and
// follows the weights: 10,000 IDs over weights 1:2:7 land within 2.5 points
// of 10 %, 20 % and 70 %.
func TestHashedDistribution(t *testing.T) {
	hubs := []Hub{{Name: "h1.azure-devices.net", Weight: 1}, {Name: "h2.azure-devices.net", Weight: 2}, {Name: "h3.azure-devices.net", Weight: 7}}
	counts := map[string]int{}
	const n = 10000
	for i := range n {
		id := fmt.Sprintf("device-%05d", i)
		h := Hashed(hubs, id)
		if Hashed(hubs, id) != h || Hashed(hubs, "DEVICE-"+id[7:]) != h {
			t.Fatalf("%s: not deterministic or not case-insensitive", id)
		}
		counts[h]++
	}
	for _, h := range hubs {
		got := float64(counts[h.Name]) / n
		want := float64(h.Weight) / 10
		if math.Abs(got-want) > 0.025 {
			t.Errorf("%s: share %.3f, want %.2f±0.025 (counts %v)", h.Name, got, want, counts)
		}
	}
}

// TestHashedStability: adding a hub moves only devices that go to the new hub.
func TestHashedStability(t *testing.T) {
	before := []Hub{{Name: "a", Weight: 1}, {Name: "b", Weight: 1}}
	after := append(before, Hub{Name: "c", Weight: 1})
	moved := 0
	for i := range 3000 {
		id := fmt.Sprint("dev", i)
		x, y := Hashed(before, id), Hashed(after, id)
		if x != y {
			if y != "c" {
				t.Fatalf("%s moved from %s to %s, not to the new hub", id, x, y)
			}
			moved++
		}
	}
	if moved < 800 || moved > 1200 {
		t.Fatalf("%d of 3000 moved to the new hub, want about a third", moved)
	}
}
