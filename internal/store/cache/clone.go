package cache

import (
	"bytes"
	"slices"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/store"
)

// The copies the cache hands out share no memory with what it holds
// (TestClonesShareNothing checks every field, so that a field added to a
// record cannot be missed here).

// cloneAll copies a list with one, keeping nil nil.
func cloneAll[T any](one func(T) T) func([]T) []T {
	return func(s []T) []T {
		if s == nil {
			return nil
		}
		out := make([]T, len(s))
		for i, v := range s {
			out[i] = one(v)
		}
		return out
	}
}

// flat copies a record whose fields are values.
func flat[T any](p *T) *T {
	if p == nil {
		return nil
	}
	c := *p
	return &c
}

func cloneInstance(i *store.Instance) *store.Instance {
	if i == nil {
		return nil
	}
	c := *i
	c.ServerCACertPEM = bytes.Clone(i.ServerCACertPEM)
	c.ServerCAKeyPEM = bytes.Clone(i.ServerCAKeyPEM)
	c.ServerCertPEM = bytes.Clone(i.ServerCertPEM)
	c.ServerKeyPEM = bytes.Clone(i.ServerKeyPEM)
	c.HostNames = slices.Clone(i.HostNames)
	c.TPMChallengeSecret = bytes.Clone(i.TPMChallengeSecret)
	return &c
}

func cloneHub(h *store.LinkedHub) *store.LinkedHub { return flat(h) }

func cloneCA(ca *store.CACertificate) *store.CACertificate {
	if ca == nil {
		return nil
	}
	c := *ca
	c.CertificateDER = bytes.Clone(ca.CertificateDER)
	c.Subject = bytes.Clone(ca.Subject)
	return &c
}

func cloneGroup(g *dps.EnrollmentGroup) *dps.EnrollmentGroup {
	if g == nil {
		return nil
	}
	c := *g
	s := &c.EnrollmentSettings
	s.Attestation = cloneAttestation(g.Attestation)
	s.Capabilities = flat(g.Capabilities)
	s.InitialTwin = g.InitialTwin.Clone()
	s.ReprovisionPolicy = flat(g.ReprovisionPolicy)
	s.CreatedDateTimeUtc = flat(g.CreatedDateTimeUtc)
	s.LastUpdatedDateTimeUtc = flat(g.LastUpdatedDateTimeUtc)
	s.IotHubs = slices.Clone(g.IotHubs)
	s.CustomAllocationDefinition = flat(g.CustomAllocationDefinition)
	s.ClientCertificateIssuancePolicy = flat(g.ClientCertificateIssuancePolicy)
	return &c
}

func cloneAttestation(a *dps.AttestationMechanism) *dps.AttestationMechanism {
	if a == nil {
		return nil
	}
	c := *a
	c.TPM = flat(a.TPM)
	c.SymmetricKey = flat(a.SymmetricKey)
	if a.X509 != nil {
		x := *a.X509
		x.ClientCertificates = cloneCertificates(a.X509.ClientCertificates)
		x.SigningCertificates = cloneCertificates(a.X509.SigningCertificates)
		x.CAReferences = flat(a.X509.CAReferences)
		c.X509 = &x
	}
	return &c
}

func cloneCertificates(cs *dps.X509Certificates) *dps.X509Certificates {
	if cs == nil {
		return nil
	}
	return &dps.X509Certificates{Primary: cloneCertificate(cs.Primary), Secondary: cloneCertificate(cs.Secondary)}
}

func cloneCertificate(w *dps.X509CertificateWithInfo) *dps.X509CertificateWithInfo {
	if w == nil {
		return nil
	}
	c := *w
	if w.Info != nil {
		i := *w.Info
		i.NotBeforeUtc = flat(w.Info.NotBeforeUtc)
		i.NotAfterUtc = flat(w.Info.NotAfterUtc)
		c.Info = &i
	}
	return &c
}
