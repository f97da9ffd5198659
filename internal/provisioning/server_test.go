package provisioning_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/client"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/provisioning/provtest"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/server"
	"github.com/dpsd/dpsd/internal/server/servertest"
	"github.com/dpsd/dpsd/internal/testutil"
)

// TestServerWiring boots the real server (server.New + Serve on 127.0.0.1:0,
// the wiring of `dpsd serve`) and provisions devices with the public client,
// with and without --azure-strict: strict answers "assigning" with
// Retry-After 3 and the client polls; the default answers at once.
func TestServerWiring(t *testing.T) {
	provtest.EachMode(t, func(t *testing.T, mode provtest.Mode) {
		srv := servertest.Start(t, server.Config{AzureStrict: mode.Strict})
		ctx := t.Context()
		endpoint, roots, st, scope := srv.DeviceAddr, srv.Roots, srv.Store(), srv.State.IDScope
		in := provtest.Instance{T: t, Store: st, Scope: scope}
		in.LinkHub(hub1, 1, true)
		gpk, _ := provtest.Keys(t, in.PutGroup(provtest.SymGroup("grp-wiring")).Attestation)
		root := in.VerifiedRoot("wiring-root", pki.Options{CommonName: "Wiring Root"})
		in.PutGroup(provtest.CAGroup("grp-wiring-x509", "wiring-root"))
		leaf, key := root.Leaf(t, pki.Options{CommonName: "wiring-x509"})

		// The raw answer to register.
		tok := sas.New(sas.DeviceResource(scope, "wiring-raw"), "registration", sas.DeriveDeviceKey(gpk, "wiring-raw"), time.Now().Add(time.Hour), true)
		req, _ := http.NewRequest(http.MethodPut, "https://"+endpoint+"/"+scope+"/registrations/wiring-raw/register?api-version=2019-03-31", strings.NewReader(`{"registrationId":"wiring-raw"}`))
		req.Header.Set("Authorization", tok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := srv.HTTPClient(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		r := &response{Status: resp.StatusCode, Header: resp.Header, Body: body}
		if r.Status != http.StatusAccepted {
			t.Fatalf("register: %s", r)
		}
		checkHeaders(t, r)
		op := r.operation(t)
		if mode.Strict {
			if op.Status != "assigning" || op.RegistrationState != nil || r.Header.Get("Retry-After") != "3" {
				t.Errorf("strict register: %s, Retry-After %q; want assigning, no registrationState, Retry-After 3", body, r.Header.Get("Retry-After"))
			}
		} else if op.Status != "assigned" || op.RegistrationState == nil || op.RegistrationState.AssignedHub != hub1 {
			t.Errorf("register: %s, want assigned to %s", body, hub1)
		}

		for name, cfg := range map[string]client.Config{
			"symmetric-key": {RegistrationID: "wiring-sym", SymmetricKey: client.DeriveKey(gpk, "wiring-sym")},
			"x509":          {RegistrationID: "wiring-x509", Certificate: testutil.TLSCert(key, leaf, root.Cert)},
		} {
			cfg.Endpoint, cfg.IDScope, cfg.RootCAs = endpoint, scope, roots
			cctx, ccancel := context.WithTimeout(ctx, requestTimeout)
			start := time.Now()
			res, err := client.Register(cctx, cfg)
			ccancel()
			took := time.Since(start)
			if err != nil {
				t.Errorf("%s: Register: %v", name, err)
				continue
			}
			if res.Status != "assigned" || res.AssignedHub != hub1 || res.DeviceID != cfg.RegistrationID {
				t.Errorf("%s: %+v", name, res)
			}
			// Strict: the client waited the Retry-After before polling.
			if mode.Strict && took < 3*time.Second || !mode.Strict && took > 2900*time.Millisecond {
				t.Errorf("%s: Register took %s in %s mode", name, took, mode.Name)
			}
		}
	})
}
