package issuance

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"net/http"
	"strings"
	"testing"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/pki"
)

// csrDER makes a PKCS#10 request signed by key.
func csrDER(t testing.TB, key crypto.Signer, subject pkix.Name, alg x509.SignatureAlgorithm) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: subject, SignatureAlgorithm: alg}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func b64(der []byte) string { return base64.StdEncoding.EncodeToString(der) }

func cn(s string) pkix.Name { return pkix.Name{CommonName: s} }

func ecKey(t testing.TB, c elliptic.Curve) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func rsaKey(t testing.TB, bits int) crypto.Signer {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestParseCSR is the table of CSR rules: every refusal is a 400 (errorCode
// 400004) whose message says what to fix.
func TestParseCSR(t *testing.T) {
	p256, p384, p224 := ecKey(t, elliptic.P256()), ecKey(t, elliptic.P384()), ecKey(t, elliptic.P224())
	rsa2048, rsa1024 := rsaKey(t, 2048), rsaKey(t, 1024)
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	good := csrDER(t, p256, cn("dev-1"), 0)
	tampered := append([]byte{}, good...)
	tampered[len(tampered)-3] ^= 0x55 // inside the signature
	cert, _, err := pki.NewSelfSigned(pki.Options{CommonName: "dev-1"})
	if err != nil {
		t.Fatal(err)
	}
	goodPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: good}))
	twoCNs := pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{{Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: "dev-1"}, {Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: "dev-2"}}}

	for name, c := range map[string]struct {
		field, value string
		want         string // "" for accepted
	}{
		"ok/p256":                     {FieldCSR, b64(good), ""},
		"ok/p384":                     {FieldCSR, b64(csrDER(t, p384, cn("dev-1"), 0)), ""},
		"ok/rsa-2048":                 {FieldCSR, b64(csrDER(t, rsa2048, cn("dev-1"), 0)), ""},
		"ok/cn-in-another-case":       {FieldCSR, b64(csrDER(t, p256, cn("DEV-1"), 0)), ""},
		"ok/with-other-attributes":    {FieldCSR, b64(csrDER(t, p256, pkix.Name{CommonName: "dev-1", Organization: []string{"Contoso"}}, 0)), ""},
		"ok/client-csr-base64":        {FieldClientCSR, b64(good), ""},
		"ok/client-csr-pem":           {FieldClientCSR, goodPEM, ""},
		"fail/cn-differs":             {FieldCSR, b64(csrDER(t, p256, cn("dev-2"), 0)), `the subject CN "dev-2" of csr does not match registration ID "dev-1"`},
		"fail/no-cn":                  {FieldCSR, b64(csrDER(t, p256, pkix.Name{Organization: []string{"Contoso"}}, 0)), "the subject of csr has no CN; it must be the registration ID"},
		"fail/two-cns":                {FieldCSR, b64(csrDER(t, p256, twoCNs, 0)), "the subject of csr has 2 CNs"},
		"fail/bad-signature":          {FieldCSR, b64(tampered), "the signature of csr does not verify with the key it carries"},
		"fail/sha1-signature":         {FieldCSR, b64(csrDER(t, rsa2048, cn("dev-1"), x509.SHA1WithRSA)), "csr is signed with SHA1-RSA, which dpsd does not accept"},
		"fail/rsa-1024":               {FieldCSR, b64(csrDER(t, rsa1024, cn("dev-1"), 0)), "the key of csr is a 1024-bit RSA key; dpsd issues certificates for RSA keys of 2048 to 8192 bits"},
		"fail/p224":                   {FieldCSR, b64(csrDER(t, p224, cn("dev-1"), 0)), "the key of csr is on curve P-224"},
		"fail/ed25519":                {FieldCSR, b64(csrDER(t, edKey, cn("dev-1"), 0)), "the key of csr is an Ed25519 key"},
		"fail/not-base64":             {FieldCSR, "MIIB$$$$", "csr is not base64: the character at offset 4"},
		"fail/url-safe-base64":        {FieldCSR, strings.NewReplacer("+", "-", "/", "_").Replace(b64(good)) + "-_", "csr is not base64"},
		"fail/pem-armour":             {FieldCSR, goodPEM, "csr must be the base64 of the DER request without PEM armour"},
		"fail/not-a-csr":              {FieldCSR, b64(cert.Raw), "csr is not a PKCS#10 certificate signing request"},
		"fail/trailing-bytes":         {FieldCSR, b64(append(append([]byte{}, good...), 0, 0)), "csr is not a PKCS#10 certificate signing request"},
		"fail/oversized":              {FieldCSR, strings.Repeat("A", MaxCSRLength+4), "csr is 8196 characters long; dpsd accepts CSRs of at most 8192"},
		"fail/client-csr-other-pem":   {FieldClientCSR, string(pki.EncodePEM(cert)), "clientCertificateCsr holds PEM, but not a CERTIFICATE REQUEST block"},
		"fail/client-csr-two-blocks":  {FieldClientCSR, goodPEM + goodPEM, "clientCertificateCsr holds more than one PEM block"},
		"fail/client-csr-cn-differs":  {FieldClientCSR, b64(csrDER(t, p256, cn("other"), 0)), `the subject CN "other" of clientCertificateCsr does not match`},
		"fail/client-csr-not-base64":  {FieldClientCSR, "not a csr", "clientCertificateCsr is not base64"},
		"fail/client-csr-not-parsing": {FieldClientCSR, b64([]byte{0x30, 0x03, 0x02, 0x01, 0x01}), "clientCertificateCsr is not a PKCS#10 certificate signing request"},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := Parse(c.field, c.value, "dev-1")
			if c.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if got.Field != c.field || !strings.EqualFold(got.CommonName(), "dev-1") {
					t.Fatalf("field %q, CN %q", got.Field, got.CommonName())
				}
				return
			}
			e := dpserr.As(err)
			if err == nil || e.Status != http.StatusBadRequest || e.Code != dpserr.CodeInvalidArgument || !strings.Contains(e.Message, c.want) {
				t.Fatalf("got %v (%d %d), want a 400 400004 saying %q", err, e.Status, e.Code, c.want)
			}
		})
	}
}

func TestFromBody(t *testing.T) {
	key := ecKey(t, elliptic.P256())
	good := b64(csrDER(t, key, cn("dev-1"), 0))
	for name, c := range map[string]struct {
		body      *dps.DeviceRegistration
		wantField string
		wantErr   string
	}{
		"no body":                {nil, "", ""},
		"no csr":                 {&dps.DeviceRegistration{RegistrationID: "dev-1"}, "", ""},
		"csr":                    {&dps.DeviceRegistration{CSR: good}, FieldCSR, ""},
		"clientCertificateCsr":   {&dps.DeviceRegistration{ClientCertificateCSR: good}, FieldClientCSR, ""},
		"both":                   {&dps.DeviceRegistration{CSR: good, ClientCertificateCSR: good}, "", "carries both csr and clientCertificateCsr"},
		"a bad one is not empty": {&dps.DeviceRegistration{CSR: "x"}, "", "csr is not base64"},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := FromBody(c.body, "dev-1")
			switch {
			case c.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("got %v, want an error saying %q", err, c.wantErr)
				}
			case err != nil:
				t.Fatal(err)
			case c.wantField == "" && got != nil, c.wantField != "" && (got == nil || got.Field != c.wantField):
				t.Fatalf("got %+v, want field %q", got, c.wantField)
			}
		})
	}
}

// FuzzParse feeds arbitrary strings to the CSR reader: it refuses or
// accepts, never panics, and what it accepts names the registration ID.
func FuzzParse(f *testing.F) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	good := csrDER(f, key, cn("dev-1"), 0)
	f.Add(b64(good), false)
	f.Add(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: good})), true)
	f.Add("MIIB", false)
	f.Add("-----BEGIN CERTIFICATE REQUEST-----\n", true)
	f.Fuzz(func(t *testing.T, value string, client bool) {
		field := FieldCSR
		if client {
			field = FieldClientCSR
		}
		c, err := Parse(field, value, "dev-1")
		if err == nil && !strings.EqualFold(c.CommonName(), "dev-1") {
			t.Fatalf("accepted a CSR for %q", c.CommonName())
		}
		if err != nil && dpserr.As(err).Status != http.StatusBadRequest {
			t.Fatalf("refused with %v, not a 400", err)
		}
	})
}
