package serviceapi

import (
	"bytes"
	"cmp"
	"crypto/x509"
	"errors"
	"net/http"
	"strings"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/httpx"
	"github.com/dpsd/dpsd/internal/issuance"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/store"
)

// Certificate issuance: the issuing CAs (behind ServiceConfig, like the
// instance's other configuration; their private keys are written, never
// read) and the certificates they issued (registration status rights: they
// are the devices' credentials, and revoking one is like deleting a
// registration record).

var issuedCertificates = dpserr.Resource{Noun: "issued certificate", NotFound: dpserr.CodeIssuedCertNotFound}

// issuingCAView renders an issuing CA, without its key.
func (a *API) issuingCAView(c *store.IssuingCA) dps.IssuingCA {
	v := dps.IssuingCA{ID: "/issuingCAs/" + c.Name, Name: c.Name, Etag: c.Etag, Properties: dps.IssuingCAProperties{
		Origin:                  c.Origin,
		CertificateValidityDays: c.CertificateValidityDays,
		ExtendedKeyUsages:       c.ExtendedKeyUsages,
		CRLURL:                  a.crlBase() + issuance.CRLPath(c.Name),
		Created:                 c.Created.UTC().Format(http.TimeFormat),
		Updated:                 c.Updated.UTC().Format(http.TimeFormat),
	}}
	if v.Properties.ExtendedKeyUsages == nil {
		v.Properties.ExtendedKeyUsages = []string{}
	}
	if cert, err := x509.ParseCertificate(c.CertificateDER); err == nil {
		p := &v.Properties
		info := pki.Info(cert)
		p.Subject, p.Issuer, p.SerialNumber = info.SubjectName, info.IssuerName, info.SerialNumber
		p.Thumbprint, p.SHA256Thumbprint = info.SHA1Thumbprint, info.SHA256Thumbprint
		p.KeyType = pki.DescribeKey(cert.PublicKey)
		p.NotBefore, p.Expiry = cert.NotBefore.UTC().Format(http.TimeFormat), cert.NotAfter.UTC().Format(http.TimeFormat)
		p.Certificate = string(pki.EncodePEM(cert))
	}
	var chain bytes.Buffer
	for _, der := range c.ChainDER {
		if cert, err := x509.ParseCertificate(der); err == nil {
			chain.Write(pki.EncodePEM(cert))
		}
	}
	v.Properties.Chain = chain.String()
	return v
}

// crlBase is the base URL the CRL URLs of the views start with: the
// configured public one, else the service endpoint.
func (a *API) crlBase() string {
	if a.CRLBaseURL != "" {
		return strings.TrimSuffix(a.CRLBaseURL, "/")
	}
	if a.Endpoints != nil {
		if _, service := a.Endpoints(); service != "" {
			return "https://" + service
		}
	}
	return ""
}

// putIssuingCA creates an issuing CA (imported when the body carries a
// certificate, else generated), or with If-Match changes its policy.
func (a *API) putIssuingCA(w http.ResponseWriter, r *http.Request, p []string) error {
	name := p[0]
	if err := dps.ValidateCAName(name); err != nil {
		return dpserr.BadRequest("%s", strings.Replace(err.Error(), "certificate name", "issuing CA name", 1))
	}
	var body dps.IssuingCABody
	if err := httpx.DecodeJSON(r, &body, true); err != nil {
		return err
	}
	in := cmp.Or(body.Properties, &dps.IssuingCABodyProperties{})
	policy := issuance.Policy{CertificateValidityDays: in.CertificateValidityDays, ExtendedKeyUsages: in.ExtendedKeyUsages}
	ifMatch := httpx.IfMatch(r)
	var c *store.IssuingCA
	if ifMatch != "" {
		prev, err := a.Store.IssuingCA(r.Context(), name)
		switch {
		case err == nil:
			if err := sameCA(prev, in); err != nil {
				return err
			}
			c = prev
		case !errors.Is(err, store.ErrNotFound):
			return dpserr.FromStore(err, issuance.IssuingCAs, name)
		}
	}
	if c == nil {
		var err error
		if c, err = a.newIssuingCA(name, in); err != nil {
			return err
		}
	}
	if err := policy.Apply(c); err != nil {
		return dpserr.BadRequest("%v", err)
	}
	stored, err := a.Store.PutIssuingCA(r.Context(), c, ifMatch)
	if err != nil {
		return dpserr.FromStore(err, issuance.IssuingCAs, name)
	}
	httpx.WriteJSON(w, http.StatusOK, a.issuingCAView(stored))
	return nil
}

// newIssuingCA imports the CA the body carries, or generates one.
func (a *API) newIssuingCA(name string, in *dps.IssuingCABodyProperties) (*store.IssuingCA, error) {
	if in.Certificate == "" {
		if in.PrivateKey != "" {
			return nil, dpserr.BadRequest("privateKey without certificate: to import a CA give both; to have dpsd generate one give neither")
		}
		kt, err := pki.ParseKeyType(in.KeyType)
		if err != nil {
			return nil, dpserr.BadRequest("keyType: %v", err)
		}
		c, err := issuance.Generate(name, issuance.GenerateOptions{CommonName: in.CommonName, KeyType: kt, Days: in.CAValidityDays})
		if err != nil {
			return nil, dpserr.BadRequest("%v", err)
		}
		return c, nil
	}
	if in.CommonName != "" || in.KeyType != "" || in.CAValidityDays != 0 {
		return nil, dpserr.BadRequest("commonName, keyType and caValidityDays describe a CA dpsd generates; an imported CA has its own")
	}
	if in.PrivateKey == "" {
		return nil, dpserr.BadRequest("certificate without privateKey: dpsd signs with the CA's key, so an imported CA needs it")
	}
	certs, err := pki.ParseCertificates([]byte(in.Certificate))
	if err != nil {
		return nil, dpserr.BadRequest("certificate: %v", err)
	}
	key, err := pki.ParsePrivateKeyPEM([]byte(in.PrivateKey), nil)
	if errors.Is(err, pki.ErrPassphraseRequired) {
		return nil, dpserr.BadRequest("privateKey is encrypted; send it decrypted (dpsd issuing-ca import --passphrase decrypts it before sending)")
	}
	if err != nil {
		return nil, dpserr.BadRequest("privateKey: %v", err)
	}
	c, err := issuance.Import(name, certs, key, a.now())
	if err != nil {
		return nil, dpserr.BadRequest("%v", err)
	}
	return c, nil
}

// sameCA refuses an update that would change a CA's certificate or key:
// what a CA signed must stay verifiable with it. Sending the same
// certificate again is not a change.
func sameCA(prev *store.IssuingCA, in *dps.IssuingCABodyProperties) error {
	const rotate = "; to rotate, create another issuing CA and name it on the enrollments"
	if in.CommonName != "" || in.KeyType != "" || in.CAValidityDays != 0 || in.PrivateKey != "" {
		return dpserr.BadRequest("issuing CA %q exists: only its policy (certificateValidityDays, extendedKeyUsages) can change%s", prev.Name, rotate)
	}
	if in.Certificate != "" {
		certs, err := pki.ParseCertificates([]byte(in.Certificate))
		if err != nil || !bytes.Equal(certs[0].Raw, prev.CertificateDER) {
			return dpserr.BadRequest("issuing CA %q exists with another certificate; its certificate and key do not change%s", prev.Name, rotate)
		}
	}
	return nil
}

// issuedCertificateView renders the record of an issued certificate.
func issuedCertificateView(c *store.IssuedCertificate) dps.IssuedCertificate {
	v := dps.IssuedCertificate{
		SerialNumber: c.SerialNumber, RegistrationID: c.RegistrationID, EnrollmentGroupID: c.EnrollmentGroupID, IssuingCA: c.IssuingCA,
		SHA256Thumbprint: c.SHA256Thumbprint, NotBeforeUtc: dps.NewTime(c.NotBefore), NotAfterUtc: dps.NewTime(c.NotAfter),
		IssuedDateTimeUtc: dps.NewTime(c.Created), RevocationReason: c.RevocationReason,
	}
	if c.Revoked() {
		v.RevokedDateTimeUtc = dps.NewTime(c.RevokedAt)
	}
	if cert, err := x509.ParseCertificate(c.CertificateDER); err == nil {
		v.SubjectName = pki.Info(cert).SubjectName
		v.Certificate = string(pki.EncodePEM(cert))
	}
	return v
}

// listIssued pages through the issued certificates, optionally of one
// registration ID (?registrationId=) and one issuing CA (?issuingCA=).
func (a *API) listIssued(w http.ResponseWriter, r *http.Request, _ []string) error {
	pr, err := readPaging(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	f := store.IssuedFilter{RegistrationID: q.Get("registrationId"), IssuingCA: q.Get("issuingCA")}
	page, err := a.Store.IssuedCertificates(r.Context(), f, pr.after, pr.size)
	if err != nil {
		return dpserr.FromStore(err, dpserr.NoRecord, "")
	}
	items := make([]dps.IssuedCertificate, len(page.Items))
	for i, c := range page.Items {
		items[i] = issuedCertificateView(c)
	}
	writePage(w, "IssuedCertificate", pr, items, page.Next)
	return nil
}

// revokeIssued revokes one issued certificate, or every certificate issued
// for a registration ID, and answers the certificates revoked.
func (a *API) revokeIssued(w http.ResponseWriter, r *http.Request, _ []string) error {
	var body dps.RevocationRequest
	if err := httpx.DecodeJSON(r, &body, false); err != nil {
		return err
	}
	if (body.SerialNumber == "") == (body.RegistrationID == "") {
		return dpserr.BadRequest("name the certificate to revoke by serialNumber, or the device whose certificates to revoke by registrationId (one of the two)")
	}
	reason, err := issuance.CanonicalReason(body.Reason)
	if err != nil {
		return dpserr.BadRequest("reason: %v", err)
	}
	revoked, err := a.Store.RevokeIssuedCertificates(r.Context(), store.Revocation{SerialNumber: body.SerialNumber, RegistrationID: body.RegistrationID, Reason: reason})
	if err != nil {
		return dpserr.FromStore(err, issuedCertificates, body.SerialNumber)
	}
	out := dps.IssuedCertificateList{Value: make([]dps.IssuedCertificate, 0, len(revoked))}
	for _, c := range revoked {
		out.Value = append(out.Value, issuedCertificateView(c))
	}
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}
