package client_test

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/client"
)

// TestRegisterSendsCSR: the CSR goes in the body's csr member as base64
// DER, with the api-version that defines it; an answer without the
// certificate is an error.
func TestRegisterSendsCSR(t *testing.T) {
	t.Parallel()
	f := newFake(t, reply{status: 202, body: assigned})
	cfg := f.config()
	_, csr, err := client.NewCSR(regID)
	if err != nil {
		t.Fatal(err)
	}
	cfg.CSR = csr
	_, _, err = register(t, cfg, 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "without issuedCertificateChain") {
		t.Fatalf("an assignment without the certificate: %v", err)
	}
	r := f.requests()
	if len(r) != 1 || r[0].query != "api-version="+client.CSRAPIVersion {
		t.Fatalf("%d requests, the first with query %q", len(r), r[0].query)
	}
	var body struct{ CSR string }
	if err := json.Unmarshal([]byte(r[0].body), &body); err != nil {
		t.Fatal(err)
	}
	der, err := base64.StdEncoding.DecodeString(body.CSR)
	if err != nil {
		t.Fatalf("csr %q is not base64", body.CSR)
	}
	req, err := x509.ParseCertificateRequest(der)
	if err != nil || req.CheckSignature() != nil || req.Subject.CommonName != regID {
		t.Fatalf("csr: %v, subject %v", err, req.Subject)
	}
	// An api-version given is kept.
	cfg.APIVersion = "2026-04-01"
	register(t, cfg, 10*time.Second)
	if r := f.requests(); r[1].query != "api-version=2026-04-01" {
		t.Errorf("query %q", r[1].query)
	}
	if _, err := client.CSRFor("", nil); err == nil {
		t.Error("CSRFor accepted an empty registration ID")
	}
}
