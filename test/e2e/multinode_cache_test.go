package e2e_test

import (
	"net/http"
	"testing"

	"github.com/dpsd/dpsd/client"
	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/testutil"
)

// mnHub2 is a second linked hub.
const mnHub2 = "hub2.azure-devices.net"

// TestMultiNodeCacheFollowsWrites: each node keeps the enrollment groups,
// CA certificates and linked hubs in memory. Node B reads them once, through
// the registrations of its devices; then each write through node A is
// applied by B to its very next registration, with nothing between the
// two: no wait, no retry.
func TestMultiNodeCacheFollowsWrites(t *testing.T) {
	t.Parallel()
	nodes, _ := mnCluster(t, 2)
	a, b := nodes[0], nodes[1]
	mnLinkHub(t, a)
	groupKey := mnGroup(t, a, "cached")
	sym := func(id string) *mnDevice { return mnNewDevice(t, a, id, client.DeriveKey(groupKey, id)) }
	root := testutil.NewRoot(t, pki.Options{CommonName: "Cache Root"})
	mnMust(t, mnService(t, a, http.MethodPut, "/certificates/cache-root", "", map[string]any{
		"certificate": string(pki.EncodePEM(root.Cert)), "isVerified": true,
	}, nil), "upload the CA")
	mnMust(t, mnService(t, a, http.MethodPut, "/enrollmentgroups/cache-ca", "", map[string]any{
		"enrollmentGroupId": "cache-ca",
		"attestation":       map[string]any{"type": "x509", "x509": map[string]any{"caReferences": map[string]any{"primary": "cache-root"}}},
	}, nil), "create the group of the CA")
	x509Dev := func(id string) *mnDevice {
		leaf, key := root.Leaf(t, pki.Options{CommonName: id})
		return mnNewX509Device(t, a, id, testutil.TLSCert(key, leaf, root.Cert))
	}

	// B reads the groups, the CA and the hubs, and keeps them: a device's
	// second registration finds its group by the hint of its record, a
	// new device of the group by the scan of every symmetric-key group.
	for _, d := range []*mnDevice{sym("cached-1"), sym("cached-2"), x509Dev("cache-x-1")} {
		mnWantAssigned(t, b, d, mnHub)
	}
	mnWantAssigned(t, b, sym("cached-1"), mnHub)
	mnWantAssigned(t, b, x509Dev("cache-x-1"), mnHub)

	t.Run("a group disabled through A is disabled on B", func(t *testing.T) {
		g := mnGetGroup(t, a, "cached")
		g.ProvisioningStatus = dps.ProvisioningDisabled
		mnMust(t, mnService(t, a, http.MethodPut, "/enrollmentgroups/cached", g.Etag, g, nil), "disable the group")
		for _, id := range []string{"cached-1", "cached-3"} {
			if got := mnRegister(t, b, sym(id)); got.str("status") != dps.StatusDisabled {
				t.Fatalf("%s on B right after A disabled its group: %d %s", id, got.status, got.raw)
			}
		}
	})

	t.Run("a hub linked and a group re-enabled on it through A are B's", func(t *testing.T) {
		no := false
		mnMust(t, mnService(t, a, http.MethodPut, "/linkedhubs/"+mnHub2, "", map[string]any{
			"connectionString": "HostName=" + mnHub2 + ";SharedAccessKeyName=iothubowner;SharedAccessKey=" + sas.NewKey(32), "applyAllocationPolicy": no,
		}, nil), "link the second hub")
		g := mnGetGroup(t, a, "cached")
		g.ProvisioningStatus, g.IotHubs = dps.ProvisioningEnabled, []string{mnHub2}
		mnMust(t, mnService(t, a, http.MethodPut, "/enrollmentgroups/cached", g.Etag, g, nil), "re-enable the group on the second hub")
		mnWantAssigned(t, b, sym("cached-1"), mnHub2)
		mnWantAssigned(t, b, sym("cached-4"), mnHub2)
	})

	t.Run("linked hubs changed through A allocate on B", func(t *testing.T) {
		for hub, apply := range map[string]bool{mnHub: false, mnHub2: true} {
			mnMust(t, mnService(t, a, http.MethodPut, "/linkedhubs/"+hub, "*", map[string]any{
				"connectionString": "HostName=" + hub + ";SharedAccessKeyName=iothubowner;SharedAccessKey=" + sas.NewKey(32), "applyAllocationPolicy": apply,
			}, nil), "change "+hub)
		}
		// The group of the CA names no hub: the hubs that apply the
		// allocation policy are its candidates.
		mnWantAssigned(t, b, x509Dev("cache-x-1"), mnHub2)
	})

	t.Run("a CA certificate deleted through A refuses its devices on B", func(t *testing.T) {
		mnMust(t, mnService(t, a, http.MethodDelete, "/certificates/cache-root", "", nil, nil), "delete the CA")
		for _, id := range []string{"cache-x-1", "cache-x-2"} {
			if got := mnRegister(t, b, x509Dev(id)); got.status != http.StatusUnauthorized {
				t.Fatalf("%s on B right after A deleted its CA: %d %s", id, got.status, got.raw)
			}
		}
	})

	t.Run("a group created through A admits its devices on B", func(t *testing.T) {
		key := mnGroup(t, a, "fresh")
		mnWantAssigned(t, b, mnNewDevice(t, a, "fresh-1", client.DeriveKey(key, "fresh-1")), mnHub2)
	})
}
