// Package enrollment holds the rules of individual enrollments and
// enrollment groups: what a valid record is, what the server fills in
// (certificate info, generated keys, defaults), what an update keeps, and
// what a read hides. The service API calls it before every write.
package enrollment

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/outbound"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/store"
)

// CAs resolves the CA certificate names of caReferences.
type CAs interface {
	CACertificate(ctx context.Context, name string) (*store.CACertificate, error)
}

// PrepareIndividual validates e for writing and completes it in place:
// canonical spellings, defaults, certificate info, generated keys. prev is the
// stored enrollment e replaces (nil on create); secrets e omits are kept from
// it, because reads hide them and clients send back what they read.
func PrepareIndividual(e *dps.IndividualEnrollment, prev *dps.IndividualEnrollment) error {
	if err := dps.ValidateID("registration ID", e.RegistrationID); err != nil {
		return dpserr.BadRequest("%v", err)
	}
	if e.DeviceID != "" {
		if err := dps.ValidateDeviceID(e.DeviceID); err != nil {
			return dpserr.BadRequest("%v", err)
		}
	}
	if err := prepareAttestation(e.Attestation, attestationOf(prev), false); err != nil {
		return err
	}
	if e.Attestation.Type == dps.AttestationX509 && len(e.RegistrationID) > dps.MaxX509IDLength {
		return dpserr.BadRequest("registration ID %q is %d characters long; an X.509 registration ID is a certificate CN and may have at most %d", e.RegistrationID, len(e.RegistrationID), dps.MaxX509IDLength)
	}
	if err := checkObject("optionalDeviceInformation", &e.OptionalDeviceInformation); err != nil {
		return err
	}
	e.RegistrationState = nil // read-only
	return prepareSettings(&e.EnrollmentSettings)
}

// PrepareGroup is PrepareIndividual for an enrollment group. cas resolves
// caReferences, which must name uploaded CA certificates.
func PrepareGroup(ctx context.Context, g *dps.EnrollmentGroup, prev *dps.EnrollmentGroup, cas CAs) error {
	if err := dps.ValidateID("enrollment group ID", g.EnrollmentGroupID); err != nil {
		return dpserr.BadRequest("%v", err)
	}
	if err := prepareAttestation(g.Attestation, attestationOf(prev), true); err != nil {
		return err
	}
	if x := g.Attestation.X509; x != nil && x.CAReferences != nil {
		for _, name := range []string{x.CAReferences.Primary, x.CAReferences.Secondary} {
			if name == "" {
				continue
			}
			if _, err := cas.CACertificate(ctx, name); err != nil {
				if errors.Is(err, store.ErrNotFound) {
					return dpserr.BadRequest("caReferences names CA certificate %q, which is not uploaded; upload it first (dpsd certificate create --certificate-name %s --path FILE)", name, name)
				}
				return err
			}
		}
	}
	return prepareSettings(&g.EnrollmentSettings)
}

// attestationOf is the attestation of the record a write replaces; nil on
// create.
func attestationOf[T any, P dps.EnrollmentPtr[T]](prev P) *dps.AttestationMechanism {
	if prev == nil {
		return nil
	}
	return prev.Settings().Attestation
}

// prepareSettings checks and completes the settings both kinds share (the
// attestation is checked by then), and clears what the store sets.
func prepareSettings(s *dps.EnrollmentSettings) error {
	s.Etag, s.CreatedDateTimeUtc, s.LastUpdatedDateTimeUtc = "", nil, nil
	if s.Capabilities == nil {
		s.Capabilities = &dps.DeviceCapabilities{}
	}
	// reprovisionPolicy stays absent when not sent, as with Azure: its
	// devices follow the default (dps.DefaultReprovisionPolicy), except on
	// the legacy api-versions that keep them on their hub.
	switch strings.ToLower(s.ProvisioningStatus) {
	case "", "enabled":
		s.ProvisioningStatus = dps.ProvisioningEnabled
	case "disabled":
		s.ProvisioningStatus = dps.ProvisioningDisabled
	default:
		return dpserr.BadRequest("provisioningStatus %q is not enabled or disabled", s.ProvisioningStatus)
	}
	if h := s.IotHubHostName; h != "" {
		if err := dps.ValidateHostName(h); err != nil {
			return dpserr.BadRequest("iotHubHostName: %v", err)
		}
	}
	seen := map[string]bool{}
	hubs := s.IotHubs[:0]
	for _, h := range s.IotHubs {
		if err := dps.ValidateHostName(h); err != nil {
			return dpserr.BadRequest("iotHubs: %v", err)
		}
		if !seen[strings.ToLower(h)] {
			seen[strings.ToLower(h)] = true
			hubs = append(hubs, h)
		}
	}
	if len(hubs) == 0 {
		hubs = nil
	}
	s.IotHubs = hubs
	if p := s.AllocationPolicy; p != "" {
		canon, ok := canonicalPolicy(p)
		if !ok {
			return dpserr.BadRequest("allocationPolicy %q is not one of hashed, geoLatency, static, custom", p)
		}
		s.AllocationPolicy = canon
	}
	// A static enrollment may name no hub (or several): as with Azure, the
	// hub is decided when a device registers (the instance's only linked
	// hub), and the registration fails with the reason when there is none.
	// A custom allocation definition is kept under any policy.
	if d := s.CustomAllocationDefinition; d != nil {
		if _, err := outbound.CheckURL(d.WebhookURL); err != nil {
			return dpserr.BadRequest("customAllocationDefinition.webhookUrl: %v", err)
		}
		if d.APIVersion == "" {
			return dpserr.BadRequest("customAllocationDefinition.apiVersion is required (e.g. 2021-10-01)")
		}
	}
	if s.AllocationPolicy == dps.AllocationCustom && s.CustomAllocationDefinition == nil {
		return dpserr.BadRequest("allocationPolicy custom needs customAllocationDefinition with webhookUrl and apiVersion")
	}
	if err := prepareIssuance(s); err != nil {
		return err
	}
	if t := s.InitialTwin; t != nil {
		if err := checkObject("initialTwin.tags", &t.Tags); err != nil {
			return err
		}
		if t.Properties != nil {
			if err := checkObject("initialTwin.properties.desired", &t.Properties.Desired); err != nil {
				return err
			}
		}
	}
	return nil
}

// prepareIssuance reads the issuing CA an enrollment names. Two preview API
// versions name it: credentialPolicyName (2025-07-01-preview, which in
// Azure names an Azure Device Registry credential policy) and
// clientCertificateIssuancePolicy.certificateAuthorityName
// (2021-11-01-preview, which names a CA linked to the instance). In dpsd
// both name one of the instance's issuing CAs; a write may use either, and
// the record keeps both, equal, so that clients of either version read it.
func prepareIssuance(s *dps.EnrollmentSettings) error {
	name := s.CredentialPolicyName
	if p := s.ClientCertificateIssuancePolicy; p != nil && p.CertificateAuthorityName != "" {
		if name != "" && !strings.EqualFold(name, p.CertificateAuthorityName) {
			return dpserr.BadRequest("credentialPolicyName %q and clientCertificateIssuancePolicy.certificateAuthorityName %q name different issuing CAs; both name the issuing CA that signs the devices' certificates, so give one of them", name, p.CertificateAuthorityName)
		}
		if name == "" {
			name = p.CertificateAuthorityName
		}
	}
	if name == "" {
		s.CredentialPolicyName, s.ClientCertificateIssuancePolicy = "", nil
		return nil
	}
	if err := dps.ValidateCAName(name); err != nil {
		return dpserr.BadRequest("credentialPolicyName: %v", strings.Replace(err.Error(), "certificate name", "issuing CA name", 1))
	}
	s.CredentialPolicyName, s.ClientCertificateIssuancePolicy = name, &dps.ClientCertificateIssuancePolicy{CertificateAuthorityName: name}
	return nil
}

// IssuingCAs resolves the issuing CA names of enrollments.
type IssuingCAs interface {
	IssuingCA(ctx context.Context, name string) (*store.IssuingCA, error)
}

// CheckIssuingCA refuses settings (prepared) that name an issuing CA the
// instance does not have.
func CheckIssuingCA(ctx context.Context, s *dps.EnrollmentSettings, cas IssuingCAs) error {
	name := s.IssuingCA()
	if name == "" {
		return nil
	}
	if _, err := cas.IssuingCA(ctx, name); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return dpserr.BadRequest("credentialPolicyName names issuing CA %q, which this instance does not have; create it first (dpsd issuing-ca create --name %s, or import one)", name, name)
		}
		return dpserr.FromStore(err, dpserr.NoRecord, "")
	}
	return nil
}

// CanonicalPolicy returns the canonical spelling of an allocation policy.
func canonicalPolicy(p string) (string, bool) {
	for _, c := range []string{dps.AllocationHashed, dps.AllocationGeoLatency, dps.AllocationStatic, dps.AllocationCustom} {
		if strings.EqualFold(p, c) {
			return c, true
		}
	}
	return "", false
}

// CanonicalAllocationPolicy is canonicalPolicy for other packages.
func CanonicalAllocationPolicy(p string) (string, bool) { return canonicalPolicy(p) }

// checkObject accepts an absent value, null, or a JSON object; null
// becomes absent, as Azure leaves null members out of its answers.
func checkObject(field string, v *json.RawMessage) error {
	t := bytes.TrimSpace(*v)
	switch {
	case string(t) == "null":
		*v = nil
		return nil
	case len(t) == 0 || t[0] == '{':
		return nil
	}
	return dpserr.BadRequest("%s must be a JSON object", field)
}

func prepareAttestation(a, prev *dps.AttestationMechanism, group bool) error {
	if a == nil {
		return dpserr.BadRequest("attestation is required")
	}
	switch strings.ToLower(a.Type) {
	case "x509":
		a.Type = dps.AttestationX509
	case "symmetrickey":
		a.Type = dps.AttestationSymmetricKey
	case "tpm":
		a.Type = dps.AttestationTPM
	case "none":
		return dpserr.BadRequest("attestation type none cannot authenticate a device; use x509, symmetricKey or tpm")
	case "":
		return dpserr.BadRequest("attestation.type is required: x509, symmetricKey or tpm")
	default:
		return dpserr.BadRequest("unknown attestation type %q; use x509, symmetricKey or tpm", a.Type)
	}
	if prev != nil && prev.Type != a.Type {
		prev = nil // nothing to keep across a change of mechanism
	}
	other := func(name string, present bool) error {
		if present {
			return dpserr.BadRequest("attestation type is %s but the attestation also has %s; send only the mechanism the type names", a.Type, name)
		}
		return nil
	}
	switch a.Type {
	case dps.AttestationTPM:
		if group {
			return dpserr.BadRequest("enrollment groups do not support TPM attestation; use an individual enrollment per TPM")
		}
		if err := errors.Join(other("x509", a.X509 != nil), other("symmetricKey", a.SymmetricKey != nil)); err != nil {
			return err
		}
		return prepareTPM(a, prev)
	case dps.AttestationSymmetricKey:
		if err := errors.Join(other("x509", a.X509 != nil), other("tpm", a.TPM != nil)); err != nil {
			return err
		}
		return prepareSymmetricKey(a, prev)
	default:
		if err := errors.Join(other("symmetricKey", a.SymmetricKey != nil), other("tpm", a.TPM != nil)); err != nil {
			return err
		}
		return prepareX509(a, prev, group)
	}
}

func prepareTPM(a, prev *dps.AttestationMechanism) error {
	if a.TPM == nil {
		a.TPM = &dps.TPMAttestation{}
	}
	if a.TPM.EndorsementKey == "" && prev != nil && prev.TPM != nil {
		a.TPM.EndorsementKey = prev.TPM.EndorsementKey
		if a.TPM.StorageRootKey == "" {
			a.TPM.StorageRootKey = prev.TPM.StorageRootKey
		}
	}
	if a.TPM.EndorsementKey == "" {
		return dpserr.BadRequest("tpm.endorsementKey is required for TPM attestation")
	}
	if _, err := base64.StdEncoding.DecodeString(a.TPM.EndorsementKey); err != nil {
		return dpserr.BadRequest("tpm.endorsementKey is not valid base64")
	}
	if a.TPM.StorageRootKey != "" {
		if _, err := base64.StdEncoding.DecodeString(a.TPM.StorageRootKey); err != nil {
			return dpserr.BadRequest("tpm.storageRootKey is not valid base64")
		}
	}
	return nil
}

func prepareSymmetricKey(a, prev *dps.AttestationMechanism) error {
	if a.SymmetricKey == nil {
		a.SymmetricKey = &dps.SymmetricKeyAttestation{}
	}
	k := a.SymmetricKey
	var pk, sk string
	if prev != nil && prev.SymmetricKey != nil {
		pk, sk = prev.SymmetricKey.PrimaryKey, prev.SymmetricKey.SecondaryKey
	}
	for _, f := range []struct {
		name string
		v    *string
		keep string
	}{{"primaryKey", &k.PrimaryKey, pk}, {"secondaryKey", &k.SecondaryKey, sk}} {
		switch {
		case *f.v != "":
			if err := checkKey(f.name, *f.v); err != nil {
				return err
			}
		case f.keep != "":
			*f.v = f.keep
		default:
			*f.v = sas.NewKey(dps.GeneratedKeyBytes) // as Azure generates them
		}
	}
	return nil
}

func checkKey(name, v string) error {
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return dpserr.BadRequest("symmetricKey.%s is not valid base64", name)
	}
	if len(b) < dps.MinSymmetricKey || len(b) > dps.MaxSymmetricKey {
		return dpserr.BadRequest("symmetricKey.%s is %d bytes; a key must be %d to %d bytes (base64 encoded)", name, len(b), dps.MinSymmetricKey, dps.MaxSymmetricKey)
	}
	return nil
}

func prepareX509(a, prev *dps.AttestationMechanism, group bool) error {
	x := a.X509
	if x == nil {
		return dpserr.BadRequest("attestation type x509 needs attestation.x509")
	}
	var prevX *dps.X509Attestation
	if prev != nil {
		prevX = prev.X509
	}
	if !group {
		if x.SigningCertificates != nil || x.CAReferences != nil {
			return dpserr.BadRequest("an individual enrollment takes x509.clientCertificates; signingCertificates and caReferences are for enrollment groups")
		}
		// An update may remove the primary certificate and keep the
		// secondary, as Azure allows.
		if x.ClientCertificates == nil || isEmptyCert(x.ClientCertificates.Primary) && isEmptyCert(x.ClientCertificates.Secondary) {
			return dpserr.BadRequest("x509.clientCertificates.primary is required: the device's certificate")
		}
		var keep *dps.X509Certificates
		if prevX != nil {
			keep = prevX.ClientCertificates
		}
		return prepareCerts("x509.clientCertificates", x.ClientCertificates, keep)
	}
	if x.ClientCertificates != nil {
		return dpserr.BadRequest("an enrollment group takes x509.signingCertificates or x509.caReferences; clientCertificates are for individual enrollments")
	}
	hasSigning := x.SigningCertificates != nil && x.SigningCertificates.Primary != nil
	hasCA := x.CAReferences != nil && x.CAReferences.Primary != ""
	switch {
	case hasSigning && hasCA:
		return dpserr.BadRequest("an enrollment group takes either x509.signingCertificates or x509.caReferences, not both")
	case hasCA:
		x.SigningCertificates = nil
		for _, n := range []string{x.CAReferences.Primary, x.CAReferences.Secondary} {
			if n != "" {
				if err := dps.ValidateCAName(n); err != nil {
					return dpserr.BadRequest("caReferences: %v", err)
				}
			}
		}
		return nil
	case hasSigning:
		x.CAReferences = nil
		var keep *dps.X509Certificates
		if prevX != nil {
			keep = prevX.SigningCertificates
		}
		return prepareCerts("x509.signingCertificates", x.SigningCertificates, keep)
	}
	return dpserr.BadRequest("an X.509 enrollment group needs x509.signingCertificates.primary (a root or intermediate certificate) or x509.caReferences.primary (the name of an uploaded CA certificate)")
}

// prepareCerts prepares a primary and a secondary certificate; either may
// be absent (an individual enrollment's caller checks that one is there).
func prepareCerts(field string, cs, keep *dps.X509Certificates) error {
	var kp, ks *dps.X509CertificateWithInfo
	if keep != nil {
		kp, ks = keep.Primary, keep.Secondary
	}
	if isEmptyCert(cs.Primary) {
		cs.Primary = nil
	} else if err := prepareCert(field+".primary", cs.Primary, []*dps.X509CertificateWithInfo{kp, ks}); err != nil {
		return err
	}
	if isEmptyCert(cs.Secondary) {
		cs.Secondary = nil
		return nil
	}
	return prepareCert(field+".secondary", cs.Secondary, []*dps.X509CertificateWithInfo{ks, kp})
}

func isEmptyCert(c *dps.X509CertificateWithInfo) bool {
	return c == nil || c.Certificate == "" && c.Info == nil
}

// prepareCert parses the certificate and fills its info. A certificate given
// by info alone (as reads return it) must be one of the stored ones. A
// group's signing certificate need not be a CA certificate: Azure accepts
// any (its own tests enroll a self-signed certificate without extensions),
// and attestation checks the device's chain when a device registers.
func prepareCert(field string, c *dps.X509CertificateWithInfo, keep []*dps.X509CertificateWithInfo) error {
	if c.Certificate == "" {
		if c.Info != nil {
			for _, k := range keep {
				if k != nil && k.Info != nil && sameCert(c.Info, k.Info) {
					c.Certificate, c.Info = k.Certificate, k.Info
					return nil
				}
			}
		}
		return dpserr.BadRequest("%s.certificate is required (PEM or base64 DER)", field)
	}
	cert, err := pki.ParseCertificate(c.Certificate)
	if err != nil {
		return dpserr.BadRequest("%s.certificate: %v", field, err)
	}
	c.Certificate = string(pki.EncodePEM(cert))
	c.Info = pki.Info(cert)
	return nil
}

func sameCert(a, b *dps.X509CertificateInfo) bool {
	if a.SHA256Thumbprint != "" {
		return strings.EqualFold(a.SHA256Thumbprint, b.SHA256Thumbprint)
	}
	return a.SHA1Thumbprint != "" && strings.EqualFold(a.SHA1Thumbprint, b.SHA1Thumbprint)
}

// Certificate returns the parsed certificate of c.
func Certificate(c *dps.X509CertificateWithInfo) (*x509.Certificate, error) {
	if c == nil || c.Certificate == "" {
		return nil, fmt.Errorf("no certificate")
	}
	return pki.ParseCertificate(c.Certificate)
}
