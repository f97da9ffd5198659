package attest

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/store"
)

// Certificates dpsd issued. A device that sent a CSR when it registered
// holds a certificate of one of the instance's issuing CAs, and may register
// again with it (mTLS) instead of its onboarding credential. The enrollment
// it registered through vouches for it while it still issues: the
// certificate is recognised as that enrollment's device. The issuing CA
// does not have to be uploaded as a CA certificate, and the device does not
// have to present the CA's chain.

// issuedRecord returns dpsd's record of leaf when dpsd issued it, or nil.
// It is found by the certificate's SHA-256 thumbprint: the exact
// certificate dpsd signed, whose private key the device proved it holds in
// the TLS handshake. A self-issued certificate is none of dpsd's, which
// spares the most common X.509 registration the lookup.
func (a *Attestor) issuedRecord(ctx context.Context, leaf *x509.Certificate) (*store.IssuedCertificate, error) {
	if selfIssued(leaf) {
		return nil, nil
	}
	rec, err := a.Store.IssuedCertificateByThumbprint(ctx, pki.SHA256Thumbprint(leaf))
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	return rec, err
}

// revoked is the refusal of a revoked certificate.
func revoked(rec *store.IssuedCertificate, leaf *x509.Certificate) error {
	reason := ""
	if rec.RevocationReason != "" {
		reason = " (" + rec.RevocationReason + ")"
	}
	return dpserr.Unauthorized("certificate %s (serial number %s), issued by issuing CA %q, was revoked at %s%s; register with the enrollment's own credentials (and a csr for a new certificate)",
		name(leaf), rec.SerialNumber, rec.IssuingCA, rec.RevokedAt.UTC().Format(time.RFC3339), reason)
}

// issuedX509 recognises a device by a certificate dpsd issued it, not
// revoked. The certificate must have been issued for this registration ID
// under the enrollment that decides for it now — e, the individual
// enrollment of the registration ID, or without one the group it was
// issued through — and that enrollment must still name an issuing CA; the
// CA that issued it must still exist, and its key must have signed it.
func (a *Attestor) issuedX509(ctx context.Context, rec *store.IssuedCertificate, e *dps.IndividualEnrollment, leaf *x509.Certificate, now time.Time) (*Identity, error) {
	what := fmt.Sprintf("certificate %s (serial number %s), which dpsd issued", name(leaf), rec.SerialNumber)
	if !strings.EqualFold(rec.RegistrationID, leaf.Subject.CommonName) {
		return nil, dpserr.Unauthorized("%s for registration ID %q, does not name that registration ID", what, rec.RegistrationID)
	}
	id := &Identity{Mechanism: dps.AttestationX509, Leaf: pki.Info(leaf), Issued: true}
	switch {
	case e != nil && rec.EnrollmentGroupID != "":
		return nil, dpserr.Unauthorized("%s through enrollment group %q, is not one of individual enrollment %q's, which now decides for this registration ID; register with the enrollment's own credentials", what, rec.EnrollmentGroupID, e.RegistrationID)
	case e != nil:
		id.Individual = e
	case rec.EnrollmentGroupID == "":
		return nil, dpserr.Unauthorized("%s under individual enrollment %q, which no longer exists", what, rec.RegistrationID)
	default:
		g, err := a.Store.Group(ctx, rec.EnrollmentGroupID)
		if errors.Is(err, store.ErrNotFound) {
			return nil, dpserr.Unauthorized("%s through enrollment group %q, which no longer exists", what, rec.EnrollmentGroupID)
		}
		if err != nil {
			return nil, err
		}
		id.Group = g
	}
	if id.Settings().IssuingCA() == "" {
		return nil, dpserr.Unauthorized("%s under %s, which no longer issues certificates (it names no issuing CA), so it no longer vouches for them", what, id.EnrollmentName())
	}
	ca, err := a.Store.IssuingCA(ctx, rec.IssuingCA)
	if errors.Is(err, store.ErrNotFound) {
		return nil, dpserr.Unauthorized("%s with issuing CA %q, which was deleted", what, rec.IssuingCA)
	}
	if err != nil {
		return nil, err
	}
	caCert, err := parse(ca.CertificateDER)
	if err != nil {
		return nil, dpserr.Internal(fmt.Errorf("issuing CA %q: %w", ca.Name, err))
	}
	if err := leaf.CheckSignatureFrom(caCert); err != nil {
		return nil, dpserr.Unauthorized("%s, does not verify with the key of issuing CA %q as it is now (the CA was replaced): %v", what, ca.Name, err)
	}
	if err := checkValidity(caCert, "issuing CA certificate", now); err != nil {
		return nil, err
	}
	if id.Group != nil {
		id.Signer = pki.Info(caCert)
	}
	return id, nil
}
