// Package attest decides who a device is: it checks the credentials a device
// presents (a TLS client certificate chain, a SAS token signed with a
// symmetric key, or a TPM's endorsement key and then a SAS token signed in
// the TPM) against the enrollments, the CA certificates and the certificates
// dpsd issued, in DPS's order of precedence, and explains every refusal
// precisely enough to fix it.
//
// A refusal is a *dpserr.Error with status 401 and errorCode 401002. A match
// whose enrollment is disabled is not an error: the Identity says so, and the
// provisioning pipeline answers with the terminal status "disabled".
package attest

import (
	"crypto/x509"
	"log/slog"
	"sync"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/store"
)

// Credentials are what a device presented.
type Credentials struct {
	// Certificates is the TLS client chain as presented: leaf first.
	Certificates []*x509.Certificate
	// SAS is the Authorization header (HTTPS) or CONNECT password (MQTT).
	SAS string
}

// Identity is the enrollment a device authenticated against.
type Identity struct {
	Mechanism  string // dps.AttestationX509, dps.AttestationSymmetricKey or dps.AttestationTPM
	Individual *dps.IndividualEnrollment
	Group      *dps.EnrollmentGroup
	// Leaf describes the device certificate (X.509 only).
	Leaf *dps.X509CertificateInfo
	// Signer describes the group's certificate the chain reached (X.509 groups).
	Signer *dps.X509CertificateInfo
	// HubKey (TPM only) is the base64 symmetric key the device receives,
	// encrypted to its TPM (HubKeyBlob), to authenticate to its IoT hub;
	// the hub's device identity is created with it, and with
	// HubSecondaryKey, which no one receives. IssueTPMHubKey sets them.
	HubKey, HubSecondaryKey, HubKeyBlob string
	// Issued (X.509 only) says that the device presented a certificate
	// dpsd issued it (issued.go): the hub knows the device by that
	// certificate's thumbprint.
	Issued bool
}

// Enrollment is the matched individual enrollment or enrollment group.
func (id *Identity) Enrollment() dps.Enrollment {
	if id.Individual != nil {
		return id.Individual
	}
	return id.Group
}

// Settings are the matched enrollment's settings: whether it is enabled,
// and where and how its devices are provisioned.
func (id *Identity) Settings() *dps.EnrollmentSettings { return id.Enrollment().Settings() }

// Disabled reports whether the matched enrollment is disabled.
func (id *Identity) Disabled() bool {
	return id.Settings().ProvisioningStatus == dps.ProvisioningDisabled
}

// EnrollmentName names the matched enrollment for messages and logs:
// `enrollment "dev-1"` or `enrollment group "line-3"`.
func (id *Identity) EnrollmentName() string {
	if id.Individual != nil {
		return "enrollment " + quote(id.Individual.RegistrationID)
	}
	return "enrollment group " + quote(id.Group.EnrollmentGroupID)
}

// GroupID is the matched group's ID, or "".
func (id *Identity) GroupID() string {
	if id.Group != nil {
		return id.Group.EnrollmentGroupID
	}
	return ""
}

// Defaults of the device certificate rules.
const (
	DefaultMinRSABits     = 2048
	DefaultMinECBits      = 256 // P-256
	DefaultMaxChainLength = 10
)

// Attestor checks credentials against a store.
type Attestor struct {
	Store store.Store
	Log   *slog.Logger
	Now   func() time.Time
	// MinRSABits and MinECBits are the weakest keys a device certificate,
	// or a CA certificate it presents, may have; MaxChainLength is the most
	// certificates a device may present. Zero means the default.
	MinRSABits, MinECBits, MaxChainLength int
	// MaxSASLifetime, when positive, refuses a device SAS token that stays
	// valid longer than this from now.
	MaxSASLifetime time.Duration
}

// maxParsed bounds the certificates kept parsed.
const maxParsed = 4096

// parsed keeps the stored certificates attestation parses (CA certificates
// and groups' signing certificates, which the store returns as DER), by
// their DER: a certificate is what its bytes say, so nothing invalidates an
// entry, and every Attestor can share them.
var parsed certCache

type certCache struct {
	mu sync.Mutex
	m  map[string]*x509.Certificate
}

// parse returns der parsed, parsing it the first time.
func parse(der []byte) (*x509.Certificate, error) {
	c := &parsed
	c.mu.Lock()
	p := c.m[string(der)]
	c.mu.Unlock()
	if p != nil {
		return p, nil
	}
	p, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]*x509.Certificate{}
	}
	if len(c.m) >= maxParsed {
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	c.m[string(der)] = p
	return p, nil
}

func orDefault(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

func (a *Attestor) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func quote(s string) string { return `"` + s + `"` }
