package attest

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/store"
)

// X509 authenticates a device by the certificate chain it presented in the
// TLS handshake. The order of precedence is DPS's: the individual enrollment
// of the registration ID first; then the enrollment group of the first
// issuing certificate presented, then the next, up to the root. The first
// match decides. The chain must reach, through certificates the device
// presented, the matched group's signing certificate or a verified CA
// certificate the group references; dpsd never fetches missing certificates.
func (a *Attestor) X509(ctx context.Context, registrationID string, chain []*x509.Certificate) (*Identity, error) {
	if len(chain) == 0 {
		return nil, dpserr.Unauthorized("no client certificate was presented and no SAS token was sent; present the device certificate (and its chain) in the TLS handshake, or an Authorization SAS token")
	}
	now := a.now()
	leaf := chain[0]
	if err := checkLeaf(leaf, registrationID, now); err != nil {
		return nil, err
	}
	e, err := a.Store.Enrollment(ctx, registrationID)
	switch {
	case err == nil:
		return individualX509(e, leaf)
	case !errors.Is(err, store.ErrNotFound):
		return nil, err
	}
	return a.groupX509(ctx, registrationID, chain, now)
}

func checkLeaf(leaf *x509.Certificate, registrationID string, now time.Time) error {
	if !nameMatches(leaf, registrationID) {
		return dpserr.Unauthorized("certificate CN %q does not match registration ID %q", leaf.Subject.CommonName, registrationID)
	}
	if err := checkValidity(leaf, "certificate", now); err != nil {
		return err
	}
	if len(leaf.ExtKeyUsage) > 0 || len(leaf.UnknownExtKeyUsage) > 0 {
		if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny) {
			return dpserr.Unauthorized("certificate %s is not valid for client authentication: its extended key usage is %s, and it needs clientAuth", name(leaf), ekuNames(leaf))
		}
	}
	if weak(leaf.SignatureAlgorithm) {
		return dpserr.Unauthorized("certificate %s is signed with %s; dpsd does not accept SHA-1 or MD5 signatures", name(leaf), leaf.SignatureAlgorithm)
	}
	return nil
}

// nameMatches compares the registration ID with the subject CN, as Azure
// does; C# devices take the first DNS name when the certificate has one, so
// that is accepted too.
func nameMatches(leaf *x509.Certificate, registrationID string) bool {
	if strings.EqualFold(leaf.Subject.CommonName, registrationID) {
		return true
	}
	return len(leaf.DNSNames) > 0 && strings.EqualFold(leaf.DNSNames[0], registrationID)
}

func individualX509(e *dps.IndividualEnrollment, leaf *x509.Certificate) (*Identity, error) {
	att := e.Attestation
	if att == nil || att.Type != dps.AttestationX509 || att.X509 == nil || att.X509.ClientCertificates == nil {
		return nil, dpserr.Unauthorized("individual enrollment %q uses %s attestation, but the device presented an X.509 certificate", e.RegistrationID, attType(att))
	}
	tp := pki.SHA256Thumbprint(leaf)
	cc := att.X509.ClientCertificates
	for _, c := range []*dps.X509CertificateWithInfo{cc.Primary, cc.Secondary} {
		if c != nil && c.Info != nil && strings.EqualFold(c.Info.SHA256Thumbprint, tp) {
			return &Identity{Mechanism: dps.AttestationX509, Individual: e, Leaf: pki.Info(leaf)}, nil
		}
	}
	return nil, dpserr.Unauthorized("certificate %s (SHA-256 thumbprint %s) is neither the primary nor the secondary certificate of individual enrollment %q", name(leaf), tp, e.RegistrationID)
}

// groupMatch is an enrollment group reached through chain[k].
type groupMatch struct {
	group *dps.EnrollmentGroup
	ca    *store.CACertificate // set when the group reached chain[k] through caReferences
}

func (a *Attestor) groupX509(ctx context.Context, registrationID string, chain []*x509.Certificate, now time.Time) (*Identity, error) {
	var verifiedCA, unverifiedCA *store.CACertificate
	for k := 1; k < len(chain); k++ {
		tp := pki.SHA256Thumbprint(chain[k])
		matches, cas, err := a.groupsAt(ctx, tp)
		if err != nil {
			return nil, err
		}
		for _, ca := range cas {
			if ca.IsVerified && verifiedCA == nil {
				verifiedCA = ca
			} else if !ca.IsVerified && unverifiedCA == nil {
				unverifiedCA = ca
			}
		}
		if len(matches) == 0 {
			continue
		}
		m := matches[0]
		if len(matches) > 1 && a.Log != nil {
			a.Log.Warn("several enrollment groups match one certificate; the first by ID decides",
				"certificate", name(chain[k]), "group", m.group.EnrollmentGroupID, "matches", len(matches))
		}
		if m.ca != nil && !m.ca.IsVerified {
			return nil, dpserr.Unauthorized("certificate chain reaches CA certificate %q (%s), which is not verified; verify it by proof of possession (dpsd certificate generate-verification-code, then verify) or upload it with --verified true (presented: %s)", m.ca.Name, name(chain[k]), describe(chain))
		}
		if err := verifyChain(chain, k, now); err != nil {
			return nil, err
		}
		id := &Identity{Mechanism: dps.AttestationX509, Group: m.group, Leaf: pki.Info(chain[0]), Signer: pki.Info(chain[k])}
		return id, nil
	}
	switch {
	case len(chain) == 1 && selfSigned(chain[0]):
		return nil, dpserr.Unauthorized("no enrollment matches registration ID %q: its self-signed certificate (SHA-256 thumbprint %s) is not enrolled; create an individual enrollment with it", registrationID, pki.SHA256Thumbprint(chain[0]))
	case len(chain) == 1:
		return nil, dpserr.Unauthorized("no individual enrollment for registration ID %q, and the device sent only its own certificate (issued by %s), so no enrollment group can match; present the chain up to a verified CA certificate (presented: %s)", registrationID, pki.DistinguishedName(chain[0].RawIssuer), describe(chain))
	case unverifiedCA != nil:
		return nil, dpserr.Unauthorized("certificate chain reaches CA certificate %q, which is not verified, and no enrollment group matches (presented: %s)", unverifiedCA.Name, describe(chain))
	case verifiedCA != nil:
		return nil, dpserr.Unauthorized("certificate chain reaches verified CA certificate %q, but no enrollment group uses it or a certificate of the chain below it (presented: %s)", verifiedCA.Name, describe(chain))
	}
	return nil, dpserr.Unauthorized("certificate chain does not reach a verified CA certificate or the signing certificate of an enrollment group (presented: %s)", describe(chain))
}

// groupsAt returns the groups whose signing certificate, or whose referenced
// CA certificate, has this thumbprint, ordered by group ID; and the CA
// certificates with this thumbprint.
func (a *Attestor) groupsAt(ctx context.Context, thumbprint string) ([]groupMatch, []*store.CACertificate, error) {
	var out []groupMatch
	gs, err := a.Store.GroupsBySigningCert(ctx, thumbprint)
	if err != nil {
		return nil, nil, err
	}
	for _, g := range gs {
		if g.Attestation != nil && g.Attestation.Type == dps.AttestationX509 {
			out = append(out, groupMatch{group: g})
		}
	}
	cas, err := a.Store.CACertificatesByThumbprint(ctx, thumbprint)
	if err != nil {
		return nil, nil, err
	}
	for _, ca := range cas {
		gs, err := a.Store.GroupsByCA(ctx, ca.Name)
		if err != nil {
			return nil, nil, err
		}
		for _, g := range gs {
			if g.Attestation != nil && g.Attestation.Type == dps.AttestationX509 {
				out = append(out, groupMatch{group: g, ca: ca})
			}
		}
	}
	slices.SortStableFunc(out, func(x, y groupMatch) int {
		return strings.Compare(strings.ToLower(x.group.EnrollmentGroupID), strings.ToLower(y.group.EnrollmentGroupID))
	})
	return out, cas, nil
}

// verifyChain checks chain[0..k] with chain[k] as the trust anchor: first
// link by link, for a precise reason, then with crypto/x509 as the final
// authority (signatures, validity, CA and path constraints, EKU nesting).
func verifyChain(chain []*x509.Certificate, k int, now time.Time) error {
	for i := 0; i < k; i++ {
		child, parent := chain[i], chain[i+1]
		if !bytes.Equal(child.RawIssuer, parent.RawSubject) {
			return dpserr.Unauthorized("certificate %s is issued by %s, but the next certificate presented is %s: the chain is missing a certificate (presented: %s)", name(child), pki.DistinguishedName(child.RawIssuer), name(parent), describe(chain))
		}
		if !parent.IsCA {
			return dpserr.Unauthorized("certificate %s signs %s but is not a CA certificate (basic constraints CA:TRUE missing)", name(parent), name(child))
		}
		if i > 0 && weak(child.SignatureAlgorithm) {
			return dpserr.Unauthorized("certificate %s is signed with %s; dpsd does not accept SHA-1 or MD5 signatures", name(child), child.SignatureAlgorithm)
		}
		if err := child.CheckSignatureFrom(parent); err != nil {
			return dpserr.Unauthorized("the signature of certificate %s does not verify with the key of %s: %v", name(child), name(parent), err)
		}
		if err := checkValidity(parent, "CA certificate", now); err != nil {
			return err
		}
	}
	roots := x509.NewCertPool()
	roots.AddCert(chain[k])
	inter := x509.NewCertPool()
	for _, c := range chain[1:k] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return dpserr.Unauthorized("certificate chain does not verify: %v (presented: %s)", err, describe(chain))
	}
	return nil
}

func checkValidity(c *x509.Certificate, what string, now time.Time) error {
	if now.Before(c.NotBefore) {
		return dpserr.Unauthorized("%s %s is not valid before %s (server time %s)", what, name(c), c.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if now.After(c.NotAfter) {
		return dpserr.Unauthorized("%s %s expired at %s (server time %s)", what, name(c), c.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return nil
}

func weak(alg x509.SignatureAlgorithm) bool {
	switch alg {
	case x509.SHA1WithRSA, x509.ECDSAWithSHA1, x509.DSAWithSHA1, x509.MD5WithRSA, x509.MD2WithRSA:
		return true
	}
	return false
}

func selfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil
}

// name is a short name of a certificate for messages: CN=... when it has one.
func name(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return "CN=" + c.Subject.CommonName
	}
	return pki.DistinguishedName(c.RawSubject)
}

// describe lists a presented chain: CN=leaf <- CN=intermediate <- CN=root.
func describe(chain []*x509.Certificate) string {
	names := make([]string, len(chain))
	for i, c := range chain {
		names[i] = name(c)
	}
	return strings.Join(names, " <- ")
}

func ekuNames(c *x509.Certificate) string {
	var ns []string
	for _, u := range c.ExtKeyUsage {
		switch u {
		case x509.ExtKeyUsageServerAuth:
			ns = append(ns, "serverAuth")
		case x509.ExtKeyUsageClientAuth:
			ns = append(ns, "clientAuth")
		case x509.ExtKeyUsageCodeSigning:
			ns = append(ns, "codeSigning")
		case x509.ExtKeyUsageEmailProtection:
			ns = append(ns, "emailProtection")
		default:
			ns = append(ns, fmt.Sprintf("eku(%d)", u))
		}
	}
	for _, o := range c.UnknownExtKeyUsage {
		ns = append(ns, o.String())
	}
	return strings.Join(ns, ", ")
}

func attType(a *dps.AttestationMechanism) string {
	if a == nil || a.Type == "" {
		return "no"
	}
	return a.Type
}
