package sqlstore

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/pki"
)

// signingCert is an index row of group_signing_certs.
type signingCert struct {
	slot       string
	thumbprint string
	subject    []byte // nil if the certificate did not parse
	der        []byte
}

// signingCerts derives the index rows of a group's signing certificates.
// The thumbprint is computed from the certificate when it parses, because
// that is what a device's chain will be matched by; otherwise the caller's
// Info is trusted. A certificate with neither is not indexed: the caller
// validates groups, and the store must not fail on what it cannot read.
func signingCerts(g *dps.EnrollmentGroup) []signingCert {
	if g.Attestation == nil || g.Attestation.X509 == nil || g.Attestation.X509.SigningCertificates == nil {
		return nil
	}
	sc := g.Attestation.X509.SigningCertificates
	var out []signingCert
	for _, c := range []struct {
		slot string
		cert *dps.X509CertificateWithInfo
	}{{"primary", sc.Primary}, {"secondary", sc.Secondary}} {
		if c.cert == nil {
			continue
		}
		row := signingCert{slot: c.slot}
		if cert, err := pki.ParseCertificate(c.cert.Certificate); err == nil {
			sum := sha256.Sum256(cert.Raw)
			row.thumbprint = strings.ToUpper(hex.EncodeToString(sum[:]))
			row.subject = cert.RawSubject
			row.der = cert.Raw
		} else if c.cert.Info != nil && c.cert.Info.SHA256Thumbprint != "" {
			row.thumbprint = normThumbprint(c.cert.Info.SHA256Thumbprint)
		} else {
			continue
		}
		out = append(out, row)
	}
	return out
}

// caRef is an index row of group_ca_refs.
type caRef struct{ slot, caKey string }

func caRefs(g *dps.EnrollmentGroup) []caRef {
	if g.Attestation == nil || g.Attestation.X509 == nil || g.Attestation.X509.CAReferences == nil {
		return nil
	}
	r := g.Attestation.X509.CAReferences
	var out []caRef
	if r.Primary != "" {
		out = append(out, caRef{"primary", key(r.Primary)})
	}
	if r.Secondary != "" {
		out = append(out, caRef{"secondary", key(r.Secondary)})
	}
	return out
}

// normThumbprint upper-cases a hex thumbprint and drops the separators some
// tools print. Every X.509 registration looks its chain up by thumbprint,
// already canonical: that case returns s itself, allocating nothing.
func normThumbprint(s string) string {
	canonical := true
	for i := 0; i < len(s) && canonical; i++ {
		c := s[i]
		canonical = '0' <= c && c <= '9' || 'A' <= c && c <= 'F'
	}
	if canonical {
		return s
	}
	return strings.ToUpper(thumbprintSeparators.Replace(strings.TrimSpace(s)))
}

var thumbprintSeparators = strings.NewReplacer(":", "", " ", "")
