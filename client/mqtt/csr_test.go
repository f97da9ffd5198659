package mqtt_test

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/dpsd/dpsd/client"
	"github.com/dpsd/dpsd/client/mqtt"
	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/provisioning/provtest"
)

// TestCSR: against a real server, over HTTPS, MQTT and MQTT over
// WebSocket, the Go client asks for a certificate with its onboarding
// credential, gets the chain, and registers again with the certificate.
func TestCSR(t *testing.T) {
	ts := startServer(t, false)
	ca := ts.IssuingCA("client-ca")
	for _, transport := range []string{"https", "mqtt", "mqtt-ws"} {
		t.Run(transport, func(t *testing.T) {
			id := "csr-" + transport
			e := provtest.SymIndividual(id)
			e.CredentialPolicyName = "client-ca"
			cfg := ts.config(transport == "mqtt-ws", id)
			cfg.SymmetricKey = symKey(t, ts.PutIndividual(e).Attestation)
			key, csr, err := client.NewCSR(id)
			if err != nil {
				t.Fatal(err)
			}
			cfg.CSR = csr
			register := func(cfg mqtt.Config) *client.RegistrationState {
				t.Helper()
				var st *client.RegistrationState
				var err error
				if transport == "https" {
					cfg.Endpoint = ts.DeviceAddr
					st, err = client.Register(ctxTimeout(t, 30*time.Second), cfg.Config)
				} else {
					st, err = mqtt.Register(ctxTimeout(t, 30*time.Second), cfg)
				}
				if err != nil {
					t.Fatalf("Register: %v", err)
				}
				return st
			}
			st := register(cfg)
			certs, err := st.IssuedCertificates()
			if err != nil {
				t.Fatal(err)
			}
			if len(certs) != 2 || certs[0].Subject.CommonName != id || !pki.KeyMatches(key, certs[0].PublicKey) || pki.SHA256Thumbprint(certs[1]) != pki.SHA256Thumbprint(mustParse(t, ca.CertificateDER)) {
				t.Fatalf("issued %d certificates: %v", len(certs), certs[0].Subject)
			}
			kp, err := st.IssuedKeyPair(key)
			if err != nil {
				t.Fatal(err)
			}
			if len(kp.Certificate) != 1 {
				t.Fatalf("the key pair carries %d certificates; the CA is a root and stays out", len(kp.Certificate))
			}
			if _, err := st.IssuedKeyPair(provtest.DeviceKey(t)); err == nil {
				t.Fatal("IssuedKeyPair accepted another key")
			}

			cfg.SymmetricKey, cfg.CSR, cfg.Certificate = nil, nil, &kp
			st = register(cfg)
			if st.Status != dps.StatusAssigned || st.X509 == nil || len(st.IssuedCertificateChain) != 0 {
				t.Fatalf("registering with the issued certificate: %+v", st)
			}
		})
	}
}

func mustParse(t *testing.T, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
