package issuance

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"net/url"
	"strings"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/store"
)

// Issuer signs the certificates devices request.
type Issuer struct {
	// CRLBaseURL, when set, is the URL the service listener is reached at
	// from outside (https://dps.example.com:8443): the certificates issued
	// then name their CA's CRL there (CRLPath) as their CRL distribution
	// point.
	CRLBaseURL string
	Now        func() time.Time
}

func (is *Issuer) now() time.Time {
	if is != nil && is.Now != nil {
		return is.Now()
	}
	return time.Now()
}

// backdate lets a device whose clock is a little behind accept a
// certificate issued just now.
const backdate = time.Minute

// Issued is a certificate issued at a registration.
type Issued struct {
	// Record is what the store keeps of it.
	Record *store.IssuedCertificate
	// Chain is the certificate, then its CA's, then the certificates above,
	// up to the root (DER).
	Chain [][]byte
	field string
}

// Issue signs a certificate for csr with ca, for a device that registered
// as registrationID through groupID ("" for an individual enrollment). The
// certificate carries the CN the device asked for and nothing else of the
// request but its key; its usages and validity are the CA's policy, and it
// never outlives the CA.
func (is *Issuer) Issue(ca *store.IssuingCA, csr *CSR, registrationID, groupID string) (*Issued, error) {
	now := is.now()
	a, err := load(ca, now)
	if err != nil {
		return nil, err
	}
	days := ca.CertificateValidityDays
	if days <= 0 {
		days = DefaultCertificateValidityDays
	}
	notBefore := now.Add(-backdate).Truncate(time.Second)
	notAfter := now.Add(time.Duration(days) * 24 * time.Hour).Truncate(time.Second)
	if notAfter.After(a.cert.NotAfter) {
		notAfter = a.cert.NotAfter
	}
	if notBefore.Before(a.cert.NotBefore) {
		notBefore = a.cert.NotBefore
	}
	var usages []x509.ExtKeyUsage
	names, err := CanonicalEKUs(ca.ExtendedKeyUsages)
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		usages = append(usages, ekus[n])
	}
	opts := pki.Options{
		Subject:     pkix.Name{CommonName: csr.CommonName()},
		PublicKey:   csr.Request.PublicKey,
		NotBefore:   notBefore,
		NotAfter:    notAfter,
		ExtKeyUsage: usages,
	}
	if is != nil && is.CRLBaseURL != "" {
		opts.CRLDistributionPoints = []string{strings.TrimSuffix(is.CRLBaseURL, "/") + CRLPath(ca.Name)}
	}
	cert, _, err := pki.NewLeaf(opts, a.cert, a.key)
	if err != nil {
		return nil, err
	}
	return &Issued{
		Record: &store.IssuedCertificate{
			SerialNumber:      pki.SerialNumber(cert),
			RegistrationID:    registrationID,
			EnrollmentGroupID: groupID,
			IssuingCA:         ca.Name,
			CertificateDER:    cert.Raw,
			SHA256Thumbprint:  pki.SHA256Thumbprint(cert),
			NotBefore:         cert.NotBefore,
			NotAfter:          cert.NotAfter,
		},
		Chain: append([][]byte{cert.Raw}, a.chain...),
		field: csr.Field,
	}, nil
}

// Deliver puts the certificates in the member of the answer that matches
// the member of the request: issuedCertificateChain (base64 DER, leaf to
// root) for csr; issuedClientCertificate (PEM, the certificate and the CAs
// above it, without a self-signed root) for clientCertificateCsr.
func (i *Issued) Deliver(res *dps.DeviceRegistrationResult) {
	if i.field == FieldClientCSR {
		var certs []*x509.Certificate
		for k, der := range i.Chain {
			c, err := x509.ParseCertificate(der)
			if err != nil || k > 0 && bytes.Equal(c.RawIssuer, c.RawSubject) {
				break
			}
			certs = append(certs, c)
		}
		res.IssuedClientCertificate = string(pki.EncodePEM(certs...))
		return
	}
	res.IssuedCertificateChain = make([]string, len(i.Chain))
	for k, der := range i.Chain {
		res.IssuedCertificateChain[k] = base64.StdEncoding.EncodeToString(der)
	}
}

// CRLPath is where the service listener publishes an issuing CA's CRL.
func CRLPath(caName string) string { return "/crl/" + url.PathEscape(caName) + ".crl" }
