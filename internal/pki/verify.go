package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
)

// VerifyProofOfPossession checks that verification proves possession of the
// private key of ca for the verification code: its subject CN must equal
// code and its signature must verify with ca's public key.
//
// The code is compared ignoring case: codes are upper-case hex, the proof
// rests on the signature, and a user who retyped the code in lower case
// should not fail. The CA need not carry CA:TRUE (a certificate uploaded as a
// CA may lack it; the signature alone is the proof), but signatures with
// SHA-1 or MD5 are refused. The verification certificate's validity period
// is not checked: an expired certificate still proves possession of the key.
func VerifyProofOfPossession(ca *x509.Certificate, verification *x509.Certificate, code string) error {
	switch {
	case ca == nil:
		return errors.New("no CA certificate")
	case verification == nil:
		return errors.New("no verification certificate")
	case code == "":
		return errors.New("no verification code")
	}
	cn := verification.Subject.CommonName
	if !strings.EqualFold(cn, code) {
		if cn == "" {
			return fmt.Errorf("verification certificate has no subject common name; it must be the verification code %s", code)
		}
		return fmt.Errorf("verification certificate subject CN is %q, not the verification code %s", cn, code)
	}
	switch verification.SignatureAlgorithm {
	case x509.MD2WithRSA, x509.MD5WithRSA, x509.SHA1WithRSA, x509.DSAWithSHA1, x509.ECDSAWithSHA1:
		return fmt.Errorf("verification certificate is signed with %s, which is insecure; sign it with SHA-256", verification.SignatureAlgorithm)
	}
	err := verification.CheckSignatureFrom(ca)
	var cv x509.ConstraintViolationError
	if errors.As(err, &cv) {
		// CheckSignatureFrom insists that ca may sign certificates; proof of
		// possession only needs the signature to verify with its key.
		err = ca.CheckSignature(verification.SignatureAlgorithm, verification.RawTBSCertificate, verification.Signature)
	}
	if err != nil {
		return fmt.Errorf("verification certificate is not signed by the key of CA %q: %w", DistinguishedName(ca.RawSubject), err)
	}
	return nil
}
