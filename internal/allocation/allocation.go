// Package allocation chooses the IoT hub a device is assigned to: the
// candidate hubs of an enrollment, and the allocation policy that picks one.
package allocation

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"strings"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/store"
)

// Failure is a terminal assignment failure: the registration ends with
// status "failed" and these errorCode and errorMessage.
type Failure struct {
	Code    int
	Message string
}

func (f *Failure) Error() string { return f.Message }

// Hub is a candidate hub, its weight and its location.
type Hub struct {
	Name     string
	Weight   int
	Location string
}

// Candidates returns the hubs an enrollment may use: its iotHubs (or legacy
// iotHubHostName) that are linked, or else every linked hub that applies the
// allocation policy. Hubs are returned with their linked spelling and weight.
func Candidates(iotHubs []string, iotHubHostName string, linked []*store.LinkedHub) ([]Hub, *Failure) {
	byName := make(map[string]*store.LinkedHub, len(linked))
	for _, h := range linked {
		byName[strings.ToLower(h.Name)] = h
	}
	named := iotHubs
	if len(named) == 0 && iotHubHostName != "" {
		named = []string{iotHubHostName}
	}
	var out []Hub
	if len(named) > 0 {
		var missing []string
		for _, n := range named {
			if h, ok := byName[strings.ToLower(n)]; ok {
				out = append(out, Hub{Name: h.Name, Weight: h.AllocationWeight, Location: h.Location})
			} else {
				missing = append(missing, n)
			}
		}
		if len(out) == 0 {
			return nil, &Failure{dpserr.CodeHubNotFound, fmt.Sprintf("IoTHub not found. The enrollment selects %s, which %s not linked to this instance (dpsd linked-hub create).", strings.Join(missing, ", "), isAre(len(missing)))}
		}
		return out, nil
	}
	for _, h := range linked {
		if h.ApplyAllocationPolicy {
			out = append(out, Hub{Name: h.Name, Weight: h.AllocationWeight, Location: h.Location})
		}
	}
	if len(out) == 0 {
		msg := "IoTHub not found. No IoT hub is linked to this instance (dpsd linked-hub create)."
		if len(linked) > 0 {
			msg = "IoTHub not found. No linked IoT hub applies the allocation policy, and the enrollment selects none."
		}
		return nil, &Failure{dpserr.CodeHubNotFound, msg}
	}
	return out, nil
}

// Select applies an allocation policy to the candidates.
func Select(policy string, candidates []Hub, registrationID string) (string, *Failure) {
	switch policy {
	case dps.AllocationStatic:
		if len(candidates) != 1 {
			return "", &Failure{dpserr.CodeNoHub, fmt.Sprintf("static allocation needs exactly one IoT hub: the one the enrollment's iotHubs name, or else the instance's only linked hub; %d are candidates (%s): name one hub in the enrollment's iotHubs", len(candidates), names(candidates))}
		}
		return candidates[0].Name, nil
	case dps.AllocationHashed, "":
		return Hashed(candidates, registrationID), nil
	case dps.AllocationCustom:
		return "", &Failure{dpserr.CodeCustomAllocation, "custom allocation (webhook) is not supported by this dpsd version; use hashed or static"}
	default:
		return "", &Failure{dpserr.CodeNoHub, fmt.Sprintf("allocation policy %s is not supported by this dpsd version; use hashed or static", policy)}
	}
}

// Hashed picks a hub by weighted rendezvous hashing of the registration ID:
// deterministic for a given set of hubs, proportional to the weights, and
// adding or removing a hub moves only the devices that must move.
func Hashed(candidates []Hub, registrationID string) string {
	best, bestScore := "", math.Inf(-1)
	id := strings.ToLower(registrationID)
	for _, h := range candidates {
		sum := sha256.Sum256([]byte(id + "\x00" + strings.ToLower(h.Name)))
		// A uniform value in (0, 1) from 53 bits of the hash.
		u := (float64(binary.BigEndian.Uint64(sum[:8])>>11) + 0.5) / (1 << 53)
		w := max(h.Weight, 1)
		score := -float64(w) / math.Log(u)
		if score > bestScore || score == bestScore && h.Name < best {
			best, bestScore = h.Name, score
		}
	}
	return best
}

func names(hs []Hub) string {
	ns := make([]string, len(hs))
	for i, h := range hs {
		ns[i] = h.Name
	}
	if len(ns) == 0 {
		return "none"
	}
	return strings.Join(ns, ", ")
}

func isAre(n int) string {
	if n == 1 {
		return "is"
	}
	return "are"
}
