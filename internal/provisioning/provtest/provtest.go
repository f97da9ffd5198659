// Package provtest is test support for the suites that drive the
// provisioning pipeline through a transport — internal/provisioning over
// HTTPS, internal/mqtt over MQTT — so that they run the same devices and
// expect the same outcomes: enrollments stored as the service API stores
// them, SAS tokens as the device SDKs make them, and the table of devices
// the service must refuse (Refusals). Certificate fixtures and the log
// buffer are internal/testutil's. Only tests import it.
package provtest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"regexp"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/enrollment"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/store"
	"github.com/dpsd/dpsd/internal/testutil"
)

// Linked hub names used across the suites.
const (
	Hub1 = "hub-1.azure-devices.net"
	Hub2 = "hub-2.azure-devices.net"
)

// Cred is what a device authenticates with: a TLS client certificate (its
// key and the chain it presents, leaf first), a SAS token (the HTTPS
// Authorization header, the MQTT CONNECT password), both or neither; and a
// TPM device's keys, which it sends in the body of its register (and status
// lookup) requests. The pipeline sees them as attest.Credentials and the
// body's tpm.
type Cred struct {
	Cert *tls.Certificate
	SAS  string
	TPM  *dps.TPMAttestation
}

// Instance is a dpsd instance under test: its store and the ID scope its
// devices address. Its methods set it up as the service API would, and fail
// T on any error.
type Instance struct {
	T     testing.TB
	Store store.Store
	Scope string
}

// must fails T unless err is nil.
func (in Instance) must(err error, what, id string) {
	in.T.Helper()
	if err != nil {
		in.T.Fatalf("%s(%s): %v", what, id, err)
	}
}

// LinkHub links an IoT hub.
func (in Instance) LinkHub(name string, weight int, apply bool) {
	in.T.Helper()
	_, err := in.Store.PutLinkedHub(context.Background(), &store.LinkedHub{
		Name: name, ConnectionString: "HostName=" + name + ";SharedAccessKeyName=iothubowner;SharedAccessKey=" + sas.NewKey(dps.GeneratedKeyBytes),
		AllocationWeight: weight, ApplyAllocationPolicy: apply,
	}, "")
	in.must(err, "PutLinkedHub", name)
}

// PutIndividual validates e as the service API does and stores it
// (overwriting any previous version).
func (in Instance) PutIndividual(e *dps.IndividualEnrollment) *dps.IndividualEnrollment {
	in.T.Helper()
	ctx, id := context.Background(), e.RegistrationID
	prev, _ := in.Store.Enrollment(ctx, id) // nil when there is none
	in.must(enrollment.PrepareIndividual(e, prev), "PrepareIndividual", id)
	stored, err := in.Store.PutEnrollment(ctx, e, "*")
	in.must(err, "PutEnrollment", id)
	return stored
}

// PutGroup validates g as the service API does and stores it (overwriting
// any previous version).
func (in Instance) PutGroup(g *dps.EnrollmentGroup) *dps.EnrollmentGroup {
	in.T.Helper()
	ctx, id := context.Background(), g.EnrollmentGroupID
	prev, _ := in.Store.Group(ctx, id) // nil when there is none
	in.must(enrollment.PrepareGroup(ctx, g, prev, in.Store), "PrepareGroup", id)
	stored, err := in.Store.PutGroup(ctx, g, "*")
	in.must(err, "PutGroup", id)
	return stored
}

// UploadCA stores a CA certificate as the service API does.
func (in Instance) UploadCA(name string, c *x509.Certificate, verified bool) {
	in.T.Helper()
	_, err := in.Store.PutCACertificate(context.Background(), &store.CACertificate{
		Name: name, CertificateDER: c.Raw, SHA256Thumbprint: pki.SHA256Thumbprint(c), Subject: c.RawSubject, IsVerified: verified,
	}, "*")
	in.must(err, "PutCACertificate", name)
}

// VerifiedRoot makes a root CA and uploads it as a verified CA certificate
// named name.
func (in Instance) VerifiedRoot(name string, o pki.Options) testutil.CA {
	in.T.Helper()
	root := testutil.NewRoot(in.T, o)
	in.UploadCA(name, root.Cert, true)
	return root
}

// DeviceToken is the C SDK's token for a device of this instance, valid for
// an hour.
func (in Instance) DeviceToken(id string, key []byte) string {
	return Token(SRLower(in.Scope, id), key, time.Now().Add(time.Hour), "registration")
}

// X509Individual is an individual enrollment on a device certificate (and
// a secondary one, when not nil).
func X509Individual(regID string, primary, secondary *x509.Certificate) *dps.IndividualEnrollment {
	cc := &dps.X509Certificates{Primary: &dps.X509CertificateWithInfo{Certificate: string(pki.EncodePEM(primary))}}
	if secondary != nil {
		cc.Secondary = &dps.X509CertificateWithInfo{Certificate: string(pki.EncodePEM(secondary))}
	}
	return &dps.IndividualEnrollment{
		RegistrationID: regID,
		EnrollmentSettings: dps.EnrollmentSettings{
			Attestation: &dps.AttestationMechanism{Type: "x509", X509: &dps.X509Attestation{ClientCertificates: cc}},
		},
	}
}

// SigningGroup is an X.509 enrollment group on a signing certificate.
func SigningGroup(id string, c *x509.Certificate) *dps.EnrollmentGroup {
	return &dps.EnrollmentGroup{
		EnrollmentGroupID: id,
		EnrollmentSettings: dps.EnrollmentSettings{
			Attestation: &dps.AttestationMechanism{Type: "x509", X509: &dps.X509Attestation{
				SigningCertificates: &dps.X509Certificates{Primary: &dps.X509CertificateWithInfo{Certificate: string(pki.EncodePEM(c))}},
			}},
		},
	}
}

// CAGroup is an X.509 enrollment group referencing an uploaded CA
// certificate.
func CAGroup(id, caName string) *dps.EnrollmentGroup {
	return &dps.EnrollmentGroup{
		EnrollmentGroupID: id,
		EnrollmentSettings: dps.EnrollmentSettings{
			Attestation: &dps.AttestationMechanism{Type: "x509", X509: &dps.X509Attestation{
				CAReferences: &dps.X509CAReferences{Primary: caName},
			}},
		},
	}
}

// SymIndividual is a symmetric-key individual enrollment; storing it
// generates its keys.
func SymIndividual(regID string) *dps.IndividualEnrollment {
	return &dps.IndividualEnrollment{RegistrationID: regID, EnrollmentSettings: dps.EnrollmentSettings{Attestation: &dps.AttestationMechanism{Type: "symmetricKey"}}}
}

// SymGroup is a symmetric-key enrollment group; storing it generates its
// keys.
func SymGroup(id string) *dps.EnrollmentGroup {
	return &dps.EnrollmentGroup{EnrollmentGroupID: id, EnrollmentSettings: dps.EnrollmentSettings{Attestation: &dps.AttestationMechanism{Type: "symmetricKey"}}}
}

// Keys returns the decoded primary and secondary keys of a stored
// symmetric-key attestation.
func Keys(t testing.TB, a *dps.AttestationMechanism) (primary, secondary []byte) {
	t.Helper()
	p, err := sas.DecodeKey(a.SymmetricKey.PrimaryKey)
	if err != nil {
		t.Fatal(err)
	}
	s, err := sas.DecodeKey(a.SymmetricKey.SecondaryKey)
	if err != nil {
		t.Fatal(err)
	}
	return p, s
}

// StrictDecode decodes a JSON answer into v, refusing unknown fields.
func StrictDecode(t testing.TB, b []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decoding %T from %s: %v", v, b, err)
	}
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// IsUUID reports whether s is a random (version 4) UUID in lower case, the
// shape of x-ms-request-id and trackingId.
func IsUUID(s string) bool { return uuidRE.MatchString(s) }

// Mode is how the service answers a register: at once (fast), or
// "assigning" first, as Azure does (strict, --azure-strict).
type Mode struct {
	Name   string
	Strict bool
}

// Modes are both modes; every suite runs its devices in each.
var Modes = []Mode{{"fast", false}, {"strict", true}}

// EachMode runs test in a parallel subtest per mode.
func EachMode(t *testing.T, test func(t *testing.T, mode Mode)) {
	for _, mode := range Modes {
		t.Run(mode.Name, func(t *testing.T) {
			t.Parallel()
			test(t, mode)
		})
	}
}
