package attest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
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
//
// A certificate dpsd issued (see issued.go) is recognised between the two:
// after the individual enrollment's own certificates, before the groups. A
// revoked one is refused whatever else would match.
func (a *Attestor) X509(ctx context.Context, registrationID string, chain []*x509.Certificate) (*Identity, error) {
	if len(chain) == 0 {
		return nil, dpserr.Unauthorized("no client certificate was presented and no SAS token was sent; present the device certificate (and its chain) in the TLS handshake, or an Authorization SAS token")
	}
	if most := orDefault(a.MaxChainLength, DefaultMaxChainLength); len(chain) > most {
		return nil, dpserr.Unauthorized("the device presented %d certificates; at most %d are accepted (the leaf and its chain up to, at most, the CA certificate)", len(chain), most)
	}
	now := a.now()
	leaf := chain[0]
	if err := a.checkLeaf(leaf, registrationID, now); err != nil {
		return nil, err
	}
	issued, err := a.issuedRecord(ctx, leaf)
	if err != nil {
		return nil, err
	}
	if issued != nil && issued.Revoked() {
		return nil, revoked(issued, leaf)
	}
	e, err := a.Store.Enrollment(ctx, registrationID)
	switch {
	case err == nil:
		id, err := individualX509(e, leaf)
		if err != nil && issued != nil {
			return a.issuedX509(ctx, issued, e, leaf, now)
		}
		return id, err
	case !errors.Is(err, store.ErrNotFound):
		return nil, err
	}
	if issued == nil {
		return a.groupX509(ctx, registrationID, chain, now)
	}
	id, why := a.issuedX509(ctx, issued, nil, leaf, now)
	if id != nil || dpserr.As(why).Code != dpserr.CodeUnauthorized {
		return id, why
	}
	// The enrollment that issued it no longer vouches for it; a group may
	// still, by the chain, as for any certificate. If none does, the reason
	// about the issued certificate says more than the chain's.
	if id, err := a.groupX509(ctx, registrationID, chain, now); id != nil || dpserr.As(err).Code != dpserr.CodeUnauthorized {
		return id, err
	}
	return nil, why
}

func (a *Attestor) checkLeaf(leaf *x509.Certificate, registrationID string, now time.Time) error {
	if !nameMatches(leaf, registrationID) {
		return dpserr.Unauthorized("certificate CN %q does not match registration ID %q", leaf.Subject.CommonName, registrationID)
	}
	if leaf.IsCA {
		return dpserr.Unauthorized("certificate %s is a CA certificate (basic constraints CA:TRUE) and cannot authenticate a device; issue the device a certificate with CA:FALSE (openssl: -extensions usr_cert; or dpsd cert create-self-signed / create-device)", name(leaf))
	}
	if err := a.checkKey(leaf, "certificate"); err != nil {
		return err
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
	var seen caSeen
	for k := 1; k < len(chain); k++ {
		id, err := a.groupAt(ctx, chain, k, now, &seen)
		if id != nil || err != nil {
			return id, err
		}
	}
	// The chain may stop below its trust anchor: Azure's SDK documentation
	// tells devices to present their chain up to, but not including, the
	// verified CA certificate, and a device of a group on a signing
	// certificate may send only its own certificate. The anchor is then the
	// stored certificate that issued the last one presented.
	last := chain[len(chain)-1]
	if !selfIssued(last) {
		anchors, err := a.issuersOf(ctx, last, &seen)
		if err != nil {
			return nil, err
		}
		for _, anchor := range anchors {
			full := append(slices.Clip(chain), anchor)
			id, err := a.groupAt(ctx, full, len(full)-1, now, &seen)
			if id != nil || err != nil {
				return id, err
			}
		}
	}
	switch {
	case len(chain) == 1 && selfSigned(chain[0]):
		return nil, dpserr.Unauthorized("no enrollment matches registration ID %q: its self-signed certificate (SHA-256 thumbprint %s) is not enrolled; create an individual enrollment with it", registrationID, pki.SHA256Thumbprint(chain[0]))
	case seen.unverified != nil:
		return nil, dpserr.Unauthorized("certificate chain reaches CA certificate %q, which is not verified, and no enrollment group matches (presented: %s)", seen.unverified.Name, describe(chain))
	case seen.verified != nil:
		return nil, dpserr.Unauthorized("certificate chain reaches verified CA certificate %q, but no enrollment group uses it or a certificate of the chain below it (presented: %s)", seen.verified.Name, describe(chain))
	case seen.forged != nil:
		return nil, dpserr.Unauthorized("certificate %s names %s as its issuer, but was not signed with the key of the stored certificate of that name (SHA-256 thumbprint %s): its authority key identifier or its signature differs (presented: %s)", name(last), pki.DistinguishedName(last.RawIssuer), pki.SHA256Thumbprint(seen.forged), describe(chain))
	case len(chain) == 1:
		return nil, dpserr.Unauthorized("no individual enrollment for registration ID %q, and the issuer of its certificate (%s) is neither a verified CA certificate nor the signing certificate of an enrollment group; present the chain up to one (presented: %s)", registrationID, pki.DistinguishedName(chain[0].RawIssuer), describe(chain))
	}
	return nil, dpserr.Unauthorized("certificate chain does not reach a verified CA certificate or the signing certificate of an enrollment group, and the issuer of its last certificate (%s) is neither (presented: %s)", pki.DistinguishedName(last.RawIssuer), describe(chain))
}

// caSeen remembers, for the refusal message, what a chain met on its way
// up without matching a group.
type caSeen struct {
	verified, unverified *store.CACertificate
	// forged is a stored certificate whose subject is the issuer of the
	// last certificate presented, but whose key did not sign it.
	forged *x509.Certificate
}

// groupAt matches chain[k] against the enrollment groups: an Identity when
// a group matches and the chain up to chain[k] verifies, an error when a
// group matches but the chain fails, and neither when no group matches.
func (a *Attestor) groupAt(ctx context.Context, chain []*x509.Certificate, k int, now time.Time, seen *caSeen) (*Identity, error) {
	matches, cas, err := a.groupsAt(ctx, pki.SHA256Thumbprint(chain[k]))
	if err != nil {
		return nil, err
	}
	for _, ca := range cas {
		if ca.IsVerified && seen.verified == nil {
			seen.verified = ca
		} else if !ca.IsVerified && seen.unverified == nil {
			seen.unverified = ca
		}
	}
	if len(matches) == 0 {
		return nil, nil
	}
	m := matches[0]
	if len(matches) > 1 && a.Log != nil {
		a.Log.Warn("several enrollment groups match one certificate; the first by ID decides",
			"certificate", name(chain[k]), "group", m.group.EnrollmentGroupID, "matches", len(matches))
	}
	if m.ca != nil && !m.ca.IsVerified {
		return nil, dpserr.Unauthorized("certificate chain reaches CA certificate %q (%s), which is not verified; verify it by proof of possession (dpsd certificate generate-verification-code, then verify) or upload it with --verified true (presented: %s)", m.ca.Name, name(chain[k]), describe(chain))
	}
	if err := a.verifyChain(chain, k, now); err != nil {
		return nil, err
	}
	return &Identity{Mechanism: dps.AttestationX509, Group: m.group, Leaf: pki.Info(chain[0]), Signer: pki.Info(chain[k])}, nil
}

// issuersOf returns the stored certificates — CA certificates of the
// instance and signing certificates of enrollment groups — that issued c:
// found by c's issuer name, narrowed by key identifier when both carry one,
// and checked by signature. A certificate with the right name but the wrong
// key is remembered in seen for the refusal message, never returned.
func (a *Attestor) issuersOf(ctx context.Context, c *x509.Certificate, seen *caSeen) ([]*x509.Certificate, error) {
	cas, err := a.Store.CACertificatesBySubject(ctx, c.RawIssuer)
	if err != nil {
		return nil, err
	}
	signing, err := a.Store.SigningCertsBySubject(ctx, c.RawIssuer)
	if err != nil {
		return nil, err
	}
	ders := make([][]byte, 0, len(cas)+len(signing))
	for _, ca := range cas {
		ders = append(ders, ca.CertificateDER)
	}
	ders = append(ders, signing...)
	var out []*x509.Certificate
	done := map[string]bool{}
	for _, der := range ders {
		p, err := parse(der)
		if err != nil {
			continue // cannot be an anchor
		}
		tp := pki.SHA256Thumbprint(p)
		if done[tp] {
			continue
		}
		done[tp] = true
		// Only the key is checked here; verifyChain then applies every
		// rule (CA flag, key usage, validity, weak signatures) with a
		// precise reason.
		var insecure x509.InsecureAlgorithmError
		otherKey := len(c.AuthorityKeyId) > 0 && len(p.SubjectKeyId) > 0 && !bytes.Equal(c.AuthorityKeyId, p.SubjectKeyId)
		if !otherKey {
			if err := p.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature); err != nil && !errors.As(err, &insecure) {
				otherKey = true
			}
		}
		if otherKey {
			if seen.forged == nil {
				seen.forged = p
			}
			continue
		}
		out = append(out, p)
	}
	return out, nil
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

// verifyChain checks chain[0..k] with chain[k] as the trust anchor: link
// by link, for a precise reason, and with crypto/x509 as the final
// authority (signatures, validity, CA and path constraints, EKU nesting).
// Each signature is verified once, by crypto/x509, when it accepts the
// chain as presented; the links' own signature checks run only when it
// does not, to say which link fails. The outcome and the reason are those
// of checking every link, signatures included, and then crypto/x509.
func (a *Attestor) verifyChain(chain []*x509.Certificate, k int, now time.Time) error {
	if err := a.checkLinks(chain, k, now, false); err != nil {
		// A link's signature may fail before this fault: that comes first.
		if serr := a.checkLinks(chain, k, now, true); serr != nil {
			return serr
		}
		return err
	}
	roots := x509.NewCertPool()
	roots.AddCert(chain[k])
	inter := x509.NewCertPool()
	for _, c := range chain[1:k] {
		inter.AddCert(c)
	}
	verified, verr := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if verr == nil && slices.ContainsFunc(verified, func(v []*x509.Certificate) bool { return samePath(v, chain[:k+1]) }) {
		return nil
	}
	// crypto/x509 refused, or accepted another path through the
	// certificates: every presented link must verify too.
	if err := a.checkLinks(chain, k, now, true); err != nil {
		return err
	}
	if verr != nil {
		return dpserr.Unauthorized("certificate chain does not verify: %v (presented: %s)", verr, describe(chain))
	}
	return nil
}

// checkLinks checks each link of chain[0..k]: the issuer's name, CA flag,
// key usage and validity, weak signature algorithms, and, with signatures,
// that each certificate's signature verifies with the next one's key.
func (a *Attestor) checkLinks(chain []*x509.Certificate, k int, now time.Time, signatures bool) error {
	for i := 0; i < k; i++ {
		child, parent := chain[i], chain[i+1]
		if i+1 < k { // a CA certificate the device presented (the anchor is the operator's)
			if err := a.checkKey(parent, "CA certificate"); err != nil {
				return err
			}
		}
		if !bytes.Equal(child.RawIssuer, parent.RawSubject) {
			return dpserr.Unauthorized("certificate %s is issued by %s, but the next certificate presented is %s: the chain is missing a certificate (presented: %s)", name(child), pki.DistinguishedName(child.RawIssuer), name(parent), describe(chain))
		}
		if !parent.IsCA {
			return dpserr.Unauthorized("certificate %s signs %s but is not a CA certificate (basic constraints CA:TRUE missing)", name(parent), name(child))
		}
		// crypto/x509 does not check a CA's key usage; RFC 5280 requires
		// keyCertSign when the extension is present.
		if parent.KeyUsage != 0 && parent.KeyUsage&x509.KeyUsageCertSign == 0 {
			return dpserr.Unauthorized("certificate %s signs %s but its key usage does not allow signing certificates (keyCertSign missing)", name(parent), name(child))
		}
		if i > 0 && weak(child.SignatureAlgorithm) {
			return dpserr.Unauthorized("certificate %s is signed with %s; dpsd does not accept SHA-1 or MD5 signatures", name(child), child.SignatureAlgorithm)
		}
		if signatures {
			if err := child.CheckSignatureFrom(parent); err != nil {
				return dpserr.Unauthorized("the signature of certificate %s does not verify with the key of %s: %v", name(child), name(parent), err)
			}
		}
		if err := checkValidity(parent, "CA certificate", now); err != nil {
			return err
		}
	}
	return nil
}

// samePath reports whether a chain crypto/x509 built is the presented one.
func samePath(built, presented []*x509.Certificate) bool {
	return slices.EqualFunc(built, presented, func(b, p *x509.Certificate) bool { return b == p || b.Equal(p) })
}

// checkKey refuses keys weaker than the configured minimum.
func (a *Attestor) checkKey(c *x509.Certificate, what string) error {
	switch k := c.PublicKey.(type) {
	case *rsa.PublicKey:
		if least := orDefault(a.MinRSABits, DefaultMinRSABits); k.N.BitLen() < least {
			return dpserr.Unauthorized("%s %s has a %d-bit RSA key; dpsd accepts RSA keys of at least %d bits", what, name(c), k.N.BitLen(), least)
		}
	case *ecdsa.PublicKey:
		if least := orDefault(a.MinECBits, DefaultMinECBits); k.Curve.Params().BitSize < least {
			return dpserr.Unauthorized("%s %s has a %s key; dpsd accepts elliptic curve keys of at least %d bits (P-256)", what, name(c), k.Curve.Params().Name, least)
		}
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

func selfIssued(c *x509.Certificate) bool { return bytes.Equal(c.RawIssuer, c.RawSubject) }

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
