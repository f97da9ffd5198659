package serviceapi_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/server"
	"github.com/dpsd/dpsd/internal/server/servertest"
	"github.com/dpsd/dpsd/internal/store"
	"github.com/dpsd/dpsd/internal/testutil"
)

const v = "?api-version=2021-10-01"

func keyPEM(t *testing.T, ca testutil.CA, passphrase string) string {
	t.Helper()
	b, err := pki.MarshalPrivateKeyPEM(ca.Key, []byte(passphrase))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func caBody(p map[string]any) map[string]any { return map[string]any{"properties": p} }

// TestIssuingCAs: generated and imported issuing CAs, policy updates, the
// rules of each, and never a private key in an answer.
func TestIssuingCAs(t *testing.T) {
	s := startServer(t)
	var ca dps.IssuingCA
	r := s.doJSON("PUT", "/issuingCAs/line-3"+v, nil, caBody(map[string]any{"certificateValidityDays": 7}), 200, &ca)
	p := ca.Properties
	if ca.ID != "/issuingCAs/line-3" || p.Origin != "generated" || p.Subject != "CN=line-3" || p.KeyType != "ECDSA P-256" || p.CertificateValidityDays != 7 ||
		!slices.Equal(p.ExtendedKeyUsages, []string{"clientAuth"}) || p.CRLURL != "https://"+s.Host+"/crl/line-3.crl" || p.Chain != "" || ca.Etag == "" {
		t.Fatalf("generated: %s", r.Body)
	}
	stored, err := s.Store.IssuingCA(context.Background(), "line-3")
	if err != nil || !strings.Contains(string(stored.PrivateKeyPEM), "PRIVATE KEY") {
		t.Fatalf("the store holds no key: %v", err)
	}

	// The policy changes under If-Match; what is not sent is kept.
	var updated dps.IssuingCA
	s.doJSON("PUT", "/issuingCAs/line-3"+v, map[string]string{"If-Match": ca.Etag}, caBody(map[string]any{"extendedKeyUsages": []string{"serverAuth"}}), 200, &updated)
	if !slices.Equal(updated.Properties.ExtendedKeyUsages, []string{"clientAuth", "serverAuth"}) || updated.Properties.CertificateValidityDays != 7 ||
		updated.Properties.Certificate != p.Certificate || updated.Etag == ca.Etag {
		t.Fatalf("updated: %+v", updated)
	}
	// Sending the certificate it has is no change; another one is.
	s.doJSON("PUT", "/issuingCAs/line-3"+v, map[string]string{"If-Match": "*"}, caBody(map[string]any{"certificate": p.Certificate}), 200, nil)

	// An intermediate imported with its chain and key.
	root := testutil.NewRoot(t, pki.Options{CommonName: "Contoso Root"})
	inter := root.Intermediate(t, pki.Options{CommonName: "Contoso Plant A"})
	chainPEM := string(pki.EncodePEM(inter.Cert, root.Cert))
	var imp dps.IssuingCA
	s.doJSON("PUT", "/issuingCAs/plant-a"+v, nil, caBody(map[string]any{"certificate": chainPEM, "privateKey": keyPEM(t, inter, "")}), 200, &imp)
	if imp.Properties.Origin != "imported" || imp.Properties.Subject != "CN=Contoso Plant A" || imp.Properties.Issuer != "CN=Contoso Root" ||
		imp.Properties.Chain != string(pki.EncodePEM(root.Cert)) {
		t.Fatalf("imported: %+v", imp.Properties)
	}

	// No read returns a key.
	for _, path := range []string{"/issuingCAs", "/issuingCAs/line-3", "/issuingCAs/plant-a"} {
		r := s.do("GET", path+v, nil, nil)
		if r.Status != 200 || strings.Contains(string(r.Body), "PRIVATE") || strings.Contains(string(r.Body), "privateKey") {
			t.Errorf("GET %s: %d, or a key in %s", path, r.Status, truncate(r.Body))
		}
	}
	var list dps.IssuingCAList
	s.doJSON("GET", "/issuingCAs"+v, nil, nil, 200, &list)
	if len(list.Value) != 2 || list.Value[0].Name != "line-3" || list.Value[1].Name != "plant-a" {
		t.Fatalf("list: %+v", list)
	}

	other := testutil.NewRoot(t, pki.Options{CommonName: "Other"})
	leaf, leafKey := root.Leaf(t, pki.Options{CommonName: "leaf"})
	for name, c := range map[string]struct {
		path    string
		ifMatch string
		body    map[string]any
		status  int
		code    int
		want    string
	}{
		"bad name":                {"/issuingCAs/a%20b", "", caBody(nil), 400, dpserr.CodeInvalidArgument, `issuing CA name "a b" may contain only letters, digits and - . _`},
		"exists":                  {"/issuingCAs/line-3", "", caBody(nil), 409, dpserr.CodeConflict, `issuing CA "line-3" already exists`},
		"stale etag":              {"/issuingCAs/line-3", ca.Etag, caBody(nil), 412, dpserr.CodePreconditionFailed, "line-3"},
		"key without certificate": {"/issuingCAs/x", "", caBody(map[string]any{"privateKey": keyPEM(t, root, "")}), 400, dpserr.CodeInvalidArgument, "privateKey without certificate"},
		"certificate without key": {"/issuingCAs/x", "", caBody(map[string]any{"certificate": chainPEM}), 400, dpserr.CodeInvalidArgument, "certificate without privateKey"},
		"another key":             {"/issuingCAs/x", "", caBody(map[string]any{"certificate": chainPEM, "privateKey": keyPEM(t, other, "")}), 400, dpserr.CodeInvalidArgument, "the private key does not belong to the CA certificate CN=Contoso Plant A"},
		"encrypted key":           {"/issuingCAs/x", "", caBody(map[string]any{"certificate": chainPEM, "privateKey": keyPEM(t, inter, "1234")}), 400, dpserr.CodeInvalidArgument, "privateKey is encrypted"},
		"not a CA":                {"/issuingCAs/x", "", caBody(map[string]any{"certificate": string(pki.EncodePEM(leaf)), "privateKey": keyPEM(t, testutil.CA{Cert: leaf, Key: leafKey}, "")}), 400, dpserr.CodeInvalidArgument, "CN=leaf is not a CA certificate"},
		"generate and import":     {"/issuingCAs/x", "", caBody(map[string]any{"certificate": chainPEM, "privateKey": keyPEM(t, inter, ""), "keyType": "rsa-2048"}), 400, dpserr.CodeInvalidArgument, "describe a CA dpsd generates"},
		"bad key type":            {"/issuingCAs/x", "", caBody(map[string]any{"keyType": "dsa"}), 400, dpserr.CodeInvalidArgument, `keyType: unknown key type "dsa"`},
		"negative validity":       {"/issuingCAs/x", "", caBody(map[string]any{"certificateValidityDays": -1}), 400, dpserr.CodeInvalidArgument, "certificateValidityDays -1 is outside"},
		"bad usage":               {"/issuingCAs/x", "", caBody(map[string]any{"extendedKeyUsages": []string{"codeSigning"}}), 400, dpserr.CodeInvalidArgument, `extended key usage "codeSigning"`},
		"another certificate":     {"/issuingCAs/line-3", "*", caBody(map[string]any{"certificate": chainPEM}), 400, dpserr.CodeInvalidArgument, "exists with another certificate"},
		"a new key":               {"/issuingCAs/line-3", "*", caBody(map[string]any{"keyType": "rsa-2048"}), 400, dpserr.CodeInvalidArgument, "only its policy"},
		"not JSON":                {"/issuingCAs/x", "", nil, 400, dpserr.CodeBadRequest, "not valid JSON"},
	} {
		t.Run(name, func(t *testing.T) {
			before := s.snapshot()
			body := []byte("{not json")
			if c.body != nil {
				body = []byte(testutil.JSON(t, c.body))
			}
			h := map[string]string{}
			if c.ifMatch != "" {
				h["If-Match"] = c.ifMatch
			}
			r := s.do("PUT", c.path+v, h, body)
			if r.Status != c.status {
				t.Fatalf("status %d, want %d: %s", r.Status, c.status, r.Body)
			}
			checkErrorBody(t, r, c.code, c.want)
			if after := s.snapshot(); after != before {
				t.Error("the refused request changed the store")
			}
		})
	}

	// ServiceConfig only.
	s.doJSON("PUT", "/policies/enroller"+v, nil, map[string]any{"rights": "EnrollmentRead, EnrollmentWrite, RegistrationStatusRead, RegistrationStatusWrite"}, 200, nil)
	for _, req := range [][2]string{{"GET", "/issuingCAs"}, {"GET", "/issuingCAs/line-3"}, {"PUT", "/issuingCAs/y"}, {"DELETE", "/issuingCAs/line-3"}} {
		if r := s.do(req[0], req[1]+v, map[string]string{"Authorization": s.token("enroller")}, []byte("{}")); r.Status != http.StatusUnauthorized {
			t.Errorf("%s %s without ServiceConfig: %d", req[0], req[1], r.Status)
		}
	}

	s.doJSON("DELETE", "/issuingCAs/plant-a"+v, nil, nil, 204, nil)
	checkErrorBody(t, s.doJSON("GET", "/issuingCAs/plant-a"+v, nil, nil, 404, nil), dpserr.CodeIssuingCANotFound, `issuing CA "plant-a" not found`)
}

// TestIssuedCertificates: the records are listed (filtered, in pages),
// read, and revoked, one or all of a device's; the CRL of their CA lists
// what was revoked, on the service listener, without credentials.
func TestIssuedCertificates(t *testing.T) {
	srv := servertest.Start(t, server.Config{ServiceAddr: "127.0.0.1:0"})
	s := &testServer{t: t, Store: srv.Store(), Host: srv.State.ServiceEndpoint, IDScope: srv.State.IDScope, client: srv.HTTPClient(t)}
	s.ownerKey = s.policyKey(dps.OwnerPolicyName)

	var ca dps.IssuingCA
	s.doJSON("PUT", "/issuingCAs/line-3"+v, nil, caBody(nil), 200, &ca)
	caStored, err := s.Store.IssuingCA(context.Background(), "line-3")
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caStored.CertificateDER)
	caKey, err := pki.ParsePrivateKeyPEM(caStored.PrivateKeyPEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	var serials []string
	var dev1, dev2 string // a serial number of each device
	for i, id := range []string{"dev-1", "dev-1", "dev-2"} {
		leaf, _, err := pki.NewLeaf(pki.Options{CommonName: id, PublicKey: provKey(t)}, caCert, caKey)
		if err != nil {
			t.Fatal(err)
		}
		serials = append(serials, pki.SerialNumber(leaf))
		if id == "dev-1" {
			dev1 = pki.SerialNumber(leaf)
		} else {
			dev2 = pki.SerialNumber(leaf)
		}
		reg := &store.Registration{Result: &dps.DeviceRegistrationResult{RegistrationID: id, Status: dps.StatusAssigned},
			Issued: &store.IssuedCertificate{SerialNumber: pki.SerialNumber(leaf), RegistrationID: id, IssuingCA: "line-3", CertificateDER: leaf.Raw,
				NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter}}
		if _, err := s.Store.SaveRegistration(context.Background(), reg, "*", nil); err != nil {
			t.Fatalf("issuing %d: %v", i, err)
		}
	}
	slices.Sort(serials)

	var all []dps.IssuedCertificate
	r := s.doJSON("GET", "/issuedCertificates"+v, nil, nil, 200, &all)
	if len(all) != 3 || r.Header.Get("x-ms-item-type") != "IssuedCertificate" || all[0].SerialNumber != serials[0] {
		t.Fatalf("list: %s", truncate(r.Body))
	}
	var page []dps.IssuedCertificate
	r = s.doJSON("GET", "/issuedCertificates"+v+"&registrationId=DEV-1", map[string]string{"x-ms-max-item-count": "1"}, nil, 200, &page)
	cont := r.Header.Get("x-ms-continuation")
	if len(page) != 1 || page[0].RegistrationID != "dev-1" || cont == "" {
		t.Fatalf("first page: %s (continuation %q)", r.Body, cont)
	}
	r = s.doJSON("GET", "/issuedCertificates"+v+"&registrationId=dev-1", map[string]string{"x-ms-max-item-count": "1", "x-ms-continuation": cont}, nil, 200, &page)
	if len(page) != 1 || page[0].RegistrationID != "dev-1" || r.Header.Get("x-ms-continuation") != "" {
		t.Fatalf("second page: %s", r.Body)
	}
	var one dps.IssuedCertificate
	s.doJSON("GET", "/issuedCertificates/"+strings.ToLower(serials[0])+v, nil, nil, 200, &one)
	if one.SerialNumber != serials[0] || one.IssuingCA != "line-3" || one.RevokedDateTimeUtc != nil || !strings.HasPrefix(one.Certificate, "-----BEGIN CERTIFICATE-----") {
		t.Fatalf("one: %+v", one)
	}
	checkErrorBody(t, s.doJSON("GET", "/issuedCertificates/00"+v, nil, nil, 404, nil), dpserr.CodeIssuedCertNotFound, `issued certificate "00" not found`)

	// Revocation, and the CRL.
	var revoked dps.IssuedCertificateList
	s.doJSON("POST", "/issuedCertificates/revoke"+v, nil, map[string]any{"serialNumber": dev1, "reason": "KeyCompromise"}, 200, &revoked)
	if len(revoked.Value) != 1 || revoked.Value[0].SerialNumber != dev1 || revoked.Value[0].RevocationReason != "keyCompromise" || revoked.Value[0].RevokedDateTimeUtc == nil {
		t.Fatalf("revoked: %+v", revoked)
	}
	revoked = dps.IssuedCertificateList{}
	s.doJSON("POST", "/issuedCertificates/revoke"+v, nil, map[string]any{"registrationId": "dev-2"}, 200, &revoked)
	if len(revoked.Value) != 1 || revoked.Value[0].SerialNumber != dev2 || revoked.Value[0].RevocationReason != "" {
		t.Fatalf("revoked: %+v", revoked)
	}
	crl := fetchCRL(t, srv, srv.ServiceAddr, "line-3", http.StatusOK)
	if err := crl.CheckSignatureFrom(caCert); err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, e := range crl.RevokedCertificateEntries {
		listed = append(listed, fmt.Sprintf("%X", e.SerialNumber))
	}
	slices.Sort(listed)
	if want := []string{dev1, dev2}; len(listed) != 2 || !slices.Contains(listed, want[0]) || !slices.Contains(listed, want[1]) {
		t.Fatalf("the CRL lists %q, want %q", listed, want)
	}
	// Not on the device listener when the service API has its own.
	fetchCRL(t, srv, srv.DeviceAddr, "line-3", http.StatusNotFound)
	fetchCRL(t, srv, srv.ServiceAddr, "unknown", http.StatusNotFound)

	for name, body := range map[string]map[string]any{
		"neither":    {"reason": "superseded"},
		"both":       {"serialNumber": serials[0], "registrationId": "dev-1"},
		"bad reason": {"serialNumber": serials[0], "reason": "certificateHold"},
	} {
		before := s.snapshot()
		if r := s.do("POST", "/issuedCertificates/revoke"+v, nil, []byte(testutil.JSON(t, body))); r.Status != 400 {
			t.Errorf("%s: %d %s", name, r.Status, r.Body)
		}
		if s.snapshot() != before {
			t.Errorf("%s: the refused revocation changed the store", name)
		}
	}

	// Registration status rights: read to list, write to revoke.
	s.doJSON("PUT", "/policies/reader"+v, nil, map[string]any{"rights": "RegistrationStatusRead"}, 200, nil)
	s.doJSON("PUT", "/policies/enroller"+v, nil, map[string]any{"rights": "EnrollmentRead, EnrollmentWrite"}, 200, nil)
	for _, c := range []struct {
		policy, method, path string
		want                 int
	}{
		{"reader", "GET", "/issuedCertificates", 200},
		{"reader", "POST", "/issuedCertificates/revoke", 401},
		{"enroller", "GET", "/issuedCertificates", 401},
		{"enroller", "GET", "/issuedCertificates/" + serials[1], 401},
	} {
		if r := s.do(c.method, c.path+v, map[string]string{"Authorization": s.token(c.policy)}, []byte(`{"registrationId":"dev-1"}`)); r.Status != c.want {
			t.Errorf("%s %s with %s: %d, want %d", c.method, c.path, c.policy, r.Status, c.want)
		}
	}
}

func provKey(t *testing.T) any {
	t.Helper()
	k, err := pki.GenerateKey(pki.KeyECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	return k.Public()
}

// fetchCRL GETs an issuing CA's CRL at addr without credentials and, when
// it is there, parses it.
func fetchCRL(t *testing.T, srv *servertest.Server, addr, ca string, want int) *x509.RevocationList {
	t.Helper()
	resp, err := srv.HTTPClient(t).Get("https://" + addr + "/crl/" + ca + ".crl")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("GET the CRL of %s at %s: %d, want %d: %s", ca, addr, resp.StatusCode, want, b)
	}
	if want != http.StatusOK {
		return nil
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/pkix-crl" {
		t.Errorf("Content-Type %q", ct)
	}
	crl, err := x509.ParseRevocationList(b)
	if err != nil {
		t.Fatal(err)
	}
	if time.Until(crl.NextUpdate) < time.Hour {
		t.Errorf("nextUpdate %s", crl.NextUpdate)
	}
	return crl
}
