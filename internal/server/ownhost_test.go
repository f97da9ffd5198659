package server

import (
	"crypto/x509"
	"testing"

	"github.com/dpsd/dpsd/internal/pki"
)

// TestOwnHost: the names a service token may be for are the --hostname
// list and what the server certificate is valid for, its wildcards and
// addresses included (a --tls-cert of the operator's own).
func TestOwnHost(t *testing.T) {
	root, rootKey, err := pki.NewRootCA(pki.Options{CommonName: "Operator Root"})
	if err != nil {
		t.Fatal(err)
	}
	leaf, _, err := pki.NewLeaf(pki.Options{CommonName: "dps", Hosts: []string{"*.dps.example", "10.0.0.5"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, root, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{cfg: Config{HostNames: []string{"Factory.Local"}}, leaf: leaf}
	for host, want := range map[string]bool{
		"factory.local":      true,
		"eu.dps.example":     true,
		"10.0.0.5":           true,
		"dps.example":        false, // a wildcard covers one label, not the bare domain
		"a.b.dps.example":    false,
		"localhost":          false, // not in this certificate
		"evil.example":       false,
		"eu.dps.example.net": false,
	} {
		if got := s.ownHost(host); got != want {
			t.Errorf("ownHost(%q) = %v, want %v", host, got, want)
		}
	}
}
