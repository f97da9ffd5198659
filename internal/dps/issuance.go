package dps

// Certificate issuance on dpsd's service API: the instance's issuing CAs
// (in the ARM shape of the other management resources) and the
// certificates they issued. Azure has no equivalent: its DPS issues from
// Azure Device Registry's credential policies.

// IssuingCA describes an issuing CA. Its private key is never returned.
type IssuingCA struct {
	ID         string              `json:"id"`
	Name       string              `json:"name"`
	Etag       string              `json:"etag"`
	Properties IssuingCAProperties `json:"properties"`
}

// IssuingCAProperties of an issuing CA. Dates are RFC 1123, as in ARM.
type IssuingCAProperties struct {
	// Origin is generated (by dpsd) or imported.
	Origin           string `json:"origin"`
	Subject          string `json:"subject"`
	Issuer           string `json:"issuer"`
	SerialNumber     string `json:"serialNumber"`
	Thumbprint       string `json:"thumbprint"`
	SHA256Thumbprint string `json:"sha256Thumbprint"`
	KeyType          string `json:"keyType"`
	NotBefore        string `json:"notBefore"`
	Expiry           string `json:"expiry"`
	// Certificate is the CA certificate (PEM); Chain the certificates above
	// it up to the root (PEM, empty for a root). Devices get both after
	// their own certificate.
	Certificate string `json:"certificate"`
	Chain       string `json:"chain,omitempty"`
	// The policy of what it issues.
	CertificateValidityDays int      `json:"certificateValidityDays"`
	ExtendedKeyUsages       []string `json:"extendedKeyUsages"`
	// CRLURL is where its certificate revocation list is published.
	CRLURL  string `json:"crlUrl"`
	Created string `json:"created"`
	Updated string `json:"updated"`
}

// IssuingCABody creates an issuing CA — generated, or imported when it
// carries a certificate and its key — or, with If-Match, changes its
// policy.
type IssuingCABody struct {
	Properties *IssuingCABodyProperties `json:"properties,omitempty"`
}

// IssuingCABodyProperties: what to import or generate, and the policy.
type IssuingCABodyProperties struct {
	// Import: the CA certificate (PEM), followed by the certificates above
	// it, and its private key (PEM, not encrypted).
	Certificate string `json:"certificate,omitempty"`
	PrivateKey  string `json:"privateKey,omitempty"`
	// Generate: the subject CN (default: the name), the key type
	// (ecdsa-p256, rsa-2048, rsa-4096) and the CA's validity in days.
	CommonName     string `json:"commonName,omitempty"`
	KeyType        string `json:"keyType,omitempty"`
	CAValidityDays int    `json:"caValidityDays,omitempty"`
	// The policy: omitted members keep their value (or the defaults).
	CertificateValidityDays int      `json:"certificateValidityDays,omitempty"`
	ExtendedKeyUsages       []string `json:"extendedKeyUsages,omitempty"`
}

// IssuingCAList is the body of an issuing CA list.
type IssuingCAList struct {
	Value []IssuingCA `json:"value"`
}

// IssuedCertificate is the record of a certificate an issuing CA issued.
type IssuedCertificate struct {
	SerialNumber       string `json:"serialNumber"`
	RegistrationID     string `json:"registrationId"`
	EnrollmentGroupID  string `json:"enrollmentGroupId,omitempty"`
	IssuingCA          string `json:"issuingCA"`
	SubjectName        string `json:"subjectName"`
	SHA256Thumbprint   string `json:"sha256Thumbprint"`
	NotBeforeUtc       *Time  `json:"notBeforeUtc"`
	NotAfterUtc        *Time  `json:"notAfterUtc"`
	IssuedDateTimeUtc  *Time  `json:"issuedDateTimeUtc"`
	RevokedDateTimeUtc *Time  `json:"revokedDateTimeUtc,omitempty"`
	RevocationReason   string `json:"revocationReason,omitempty"`
	// Certificate is the certificate as PEM.
	Certificate string `json:"certificate"`
}

// RevocationRequest revokes one issued certificate (SerialNumber) or all of
// a device's (RegistrationID), with an RFC 5280 reason name.
type RevocationRequest struct {
	SerialNumber   string `json:"serialNumber,omitempty"`
	RegistrationID string `json:"registrationId,omitempty"`
	Reason         string `json:"reason,omitempty"`
}

// IssuedCertificateList is the answer to a revocation: the certificates
// it revoked.
type IssuedCertificateList struct {
	Value []IssuedCertificate `json:"value"`
}
