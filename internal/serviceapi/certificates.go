package serviceapi

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strings"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/httpx"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/store"
)

// CA certificates, in the shapes of ARM's DPS certificate resource. A device
// chain that ends in a verified CA authenticates members of groups that
// reference it; verification is by proof of possession of the CA's key or by
// the uploader's say-so (isVerified on upload), as in Azure.

var caCertificates = dpserr.Resource{Noun: "CA certificate", NotFound: dpserr.CodeCertificateNotFound}

// certificateView renders a CA certificate for a read.
func certificateView(c *store.CACertificate) dps.CertificateResponse {
	return CertificateView(c, false)
}

// CertificateView renders a stored CA certificate.
func CertificateView(c *store.CACertificate, withCode bool) dps.CertificateResponse {
	resp := dps.CertificateResponse{
		ID:   "/certificates/" + c.Name,
		Name: c.Name,
		Type: dps.CertificateTypeARM,
		Etag: c.Etag,
		Properties: dps.CertificateProperties{
			IsVerified: c.IsVerified,
			Created:    c.Created.UTC().Format(http.TimeFormat),
			Updated:    c.Updated.UTC().Format(http.TimeFormat),
		},
	}
	if cert, err := pki.ParseCertificate(string(c.CertificateDER)); err == nil {
		resp.Properties.Subject = pki.Info(cert).SubjectName
		resp.Properties.Expiry = cert.NotAfter.UTC().Format(http.TimeFormat)
		resp.Properties.Thumbprint = pki.SHA1Thumbprint(cert)
		resp.Properties.SHA256Thumbprint = pki.SHA256Thumbprint(cert)
		resp.Properties.Certificate = string(pki.EncodePEM(cert))
	}
	if withCode {
		resp.Properties.VerificationCode = c.VerificationCode
	}
	return resp
}

func (a *API) putCertificate(w http.ResponseWriter, r *http.Request, p []string) error {
	name := p[0]
	if err := dps.ValidateCAName(name); err != nil {
		return dpserr.BadRequest("%v", err)
	}
	var body dps.CertificateBody
	if err := httpx.DecodeJSON(r, &body, false); err != nil {
		return err
	}
	pem, verified := body.Certificate, body.IsVerified
	if body.Properties != nil {
		if body.Properties.Certificate != "" {
			pem = body.Properties.Certificate
		}
		if body.Properties.IsVerified != nil {
			verified = body.Properties.IsVerified
		}
	}
	if pem == "" {
		return dpserr.BadRequest("certificate is required: the CA certificate as PEM or base64 DER")
	}
	cert, err := pki.ParseCertificate(pem)
	if err != nil {
		return dpserr.BadRequest("certificate: %v", err)
	}
	if !cert.IsCA {
		return dpserr.BadRequest("%s is not a CA certificate (basic constraints CA:TRUE missing); upload the root or intermediate that signs device certificates", cert.Subject)
	}
	c := &store.CACertificate{
		Name:             name,
		CertificateDER:   cert.Raw,
		SHA256Thumbprint: pki.SHA256Thumbprint(cert),
		Subject:          cert.RawSubject,
	}
	ifMatch := httpx.IfMatch(r)
	if ifMatch != "" {
		// An update keeps the verified state of the same certificate.
		if prev, err := a.Store.CACertificate(r.Context(), name); err == nil && prev.SHA256Thumbprint == c.SHA256Thumbprint {
			c.IsVerified, c.VerificationCode = prev.IsVerified, prev.VerificationCode
		}
	}
	if verified != nil {
		c.IsVerified = *verified
	}
	stored, err := a.Store.PutCACertificate(r.Context(), c, ifMatch)
	if err != nil {
		return dpserr.FromStore(err, caCertificates, name)
	}
	httpx.WriteJSON(w, http.StatusOK, CertificateView(stored, false))
	return nil
}

// generateVerificationCode issues the code the subject CN of a proof-of-
// possession certificate must carry.
func (a *API) generateVerificationCode(w http.ResponseWriter, r *http.Request, p []string) error {
	c, err := a.Store.CACertificate(r.Context(), p[0])
	if err != nil {
		return dpserr.FromStore(err, caCertificates, p[0])
	}
	var b [16]byte
	rand.Read(b[:])
	c.VerificationCode = strings.ToUpper(hex.EncodeToString(b[:]))
	return a.updateCertificate(w, r, p[0], c, true)
}

// updateCertificate writes back c, read and changed by the request, under
// the request's If-Match or else the etag c was read with, and answers it.
func (a *API) updateCertificate(w http.ResponseWriter, r *http.Request, name string, c *store.CACertificate, withCode bool) error {
	ifMatch := httpx.IfMatch(r)
	if ifMatch == "" || ifMatch == "*" {
		ifMatch = c.Etag
	}
	stored, err := a.Store.PutCACertificate(r.Context(), c, ifMatch)
	if err != nil {
		return dpserr.FromStore(err, caCertificates, name)
	}
	httpx.WriteJSON(w, http.StatusOK, CertificateView(stored, withCode))
	return nil
}

// verifyCertificate checks a certificate whose subject CN is the verification
// code and which the CA's key signed, and marks the CA verified.
func (a *API) verifyCertificate(w http.ResponseWriter, r *http.Request, p []string) error {
	c, err := a.Store.CACertificate(r.Context(), p[0])
	if err != nil {
		return dpserr.FromStore(err, caCertificates, p[0])
	}
	var body dps.VerificationCodeRequest
	if err := httpx.DecodeJSON(r, &body, false); err != nil {
		return err
	}
	if body.Certificate == "" {
		return dpserr.BadRequest("certificate is required: the verification certificate (PEM or base64 DER) whose subject CN is the verification code")
	}
	if c.VerificationCode == "" {
		return dpserr.BadRequest("no verification code has been generated for CA certificate %q; generate one first (dpsd certificate generate-verification-code --certificate-name %s)", c.Name, c.Name)
	}
	vc, err := pki.ParseCertificate(body.Certificate)
	if err != nil {
		return dpserr.BadRequest("verification certificate: %v", err)
	}
	ca, err := pki.ParseCertificate(string(c.CertificateDER))
	if err != nil {
		return dpserr.Internal(err)
	}
	if now := a.now(); now.Before(vc.NotBefore) || now.After(vc.NotAfter) {
		return dpserr.BadRequest("the verification certificate is not valid now (valid %s to %s)", vc.NotBefore.UTC().Format(http.TimeFormat), vc.NotAfter.UTC().Format(http.TimeFormat))
	}
	if err := pki.VerifyProofOfPossession(ca, vc, c.VerificationCode); err != nil {
		return dpserr.BadRequest("proof of possession failed for CA certificate %q: %v", c.Name, err)
	}
	c.IsVerified, c.VerificationCode = true, ""
	return a.updateCertificate(w, r, p[0], c, false)
}
