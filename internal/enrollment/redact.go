package enrollment

import "github.com/dpsd/dpsd/internal/dps"

// Reads (get, query) return enrollments without their secrets: symmetric keys
// are left out, and certificates are described by their info alone. The
// create/update response and the attestation mechanism call return the keys.

// Redact returns a copy of e fit for a read.
func Redact[T any, P dps.EnrollmentPtr[T]](e P) P {
	return withAttestation(e, redact(e.Settings().Attestation, true))
}

// WriteView returns a copy of e for the answer to a write: keys included,
// certificates by info.
func WriteView[T any, P dps.EnrollmentPtr[T]](e P) P {
	return withAttestation(e, redact(e.Settings().Attestation, false))
}

func withAttestation[T any, P dps.EnrollmentPtr[T]](e P, a *dps.AttestationMechanism) P {
	c := P(new(T))
	*c = *e
	c.Settings().Attestation = a
	return c
}

func redact(a *dps.AttestationMechanism, hideKeys bool) *dps.AttestationMechanism {
	if a == nil {
		return nil
	}
	c := *a
	if hideKeys {
		c.SymmetricKey = nil
	}
	if a.X509 != nil {
		x := *a.X509
		x.ClientCertificates = infoOnly(a.X509.ClientCertificates)
		x.SigningCertificates = infoOnly(a.X509.SigningCertificates)
		c.X509 = &x
	}
	return &c
}

func infoOnly(cs *dps.X509Certificates) *dps.X509Certificates {
	if cs == nil {
		return nil
	}
	strip := func(c *dps.X509CertificateWithInfo) *dps.X509CertificateWithInfo {
		if c == nil {
			return nil
		}
		return &dps.X509CertificateWithInfo{Info: c.Info}
	}
	return &dps.X509Certificates{Primary: strip(cs.Primary), Secondary: strip(cs.Secondary)}
}
