package cli

// The two kinds of enrollment the enrollment and enrollment-group commands
// edit, and how flag values become their attestation and settings.

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/dpsd/dpsd/internal/dps"
)

// enrollmentKind is what sets the enrollment and enrollment-group commands
// apart: the record they edit, and its words in help and messages.
type enrollmentKind struct {
	target
	group     bool
	article   string // "an individual enrollment", in the verbs' short help
	plural    string // "individual enrollments"
	idKind    string // what ID checks call the ID
	idAliases []string
	query     string   // the query that lists the records
	header    []string // of the list table
	certField string   // the certificates in show: "certificate", "signingCertificate"
	certSlot  func(*dps.X509Attestation) **dps.X509Certificates
	help      enrollmentHelp

	newRecord func(id string) enrollmentRecord
	decode    func(json.RawMessage) (enrollmentRecord, error)
}

// enrollmentHelp is the help of the flags whose meaning depends on the kind.
type enrollmentHelp struct {
	id, attType, cert, secCert, primaryKey, secondaryKey string
	createExample                                        string
}

var individualKind = &enrollmentKind{
	target:    target{cmd: "enrollment", noun: "enrollment", idFlag: "--enrollment-id", collection: "/enrollments"},
	article:   "an individual enrollment",
	plural:    "individual enrollments",
	idKind:    "registration ID",
	idAliases: []string{"eid"},
	query:     "SELECT * FROM enrollments",
	header:    []string{"REGISTRATION ID", "ATTESTATION", "STATUS", "DEVICE ID", "HUBS", "ALLOCATION"},
	certField: "certificate",
	certSlot:  func(x *dps.X509Attestation) **dps.X509Certificates { return &x.ClientCertificates },
	help: enrollmentHelp{
		id:           "ID of the enrollment: the device's registration ID (for X.509, its certificate's subject CN)",
		attType:      "attestation mechanism: x509, symmetrickey or tpm",
		cert:         "the device's certificate (PEM or DER)",
		secCert:      "a second certificate of the device (PEM or DER)",
		primaryKey:   "primary symmetric key, base64 (default: generated)",
		secondaryKey: "secondary symmetric key, base64 (default: generated)",
		createExample: `  dpsd enrollment create --enrollment-id my-x509-device --attestation-type x509 --certificate-path device-cert.pem
  dpsd enrollment create --enrollment-id sensor-1 --attestation-type symmetrickey
  dpsd enrollment create --enrollment-id tpm-1 --attestation-type tpm --endorsement-key AToAAQAL...`,
	},
	newRecord: func(id string) enrollmentRecord { return individual{&dps.IndividualEnrollment{RegistrationID: id}} },
	decode: func(raw json.RawMessage) (enrollmentRecord, error) {
		en := &dps.IndividualEnrollment{}
		err := json.Unmarshal(raw, en)
		return individual{en}, err
	},
}

var groupKind = &enrollmentKind{
	target:    target{cmd: "enrollment-group", noun: "enrollment group", idFlag: "--enrollment-id", collection: "/enrollmentGroups"},
	group:     true,
	article:   "an enrollment group",
	plural:    "enrollment groups",
	idKind:    "enrollment group ID",
	idAliases: []string{"eid", "group-id", "gid"},
	query:     "SELECT * FROM enrollmentGroups",
	header:    []string{"GROUP ID", "ATTESTATION", "SIGNED BY", "STATUS", "HUBS", "ALLOCATION"},
	certField: "signingCertificate",
	certSlot:  func(x *dps.X509Attestation) **dps.X509Certificates { return &x.SigningCertificates },
	help: enrollmentHelp{
		id:           "ID of the enrollment group",
		attType:      "x509 or symmetrickey (default: x509 with --certificate-path or --ca-name, else symmetrickey)",
		cert:         "root or intermediate CA certificate (PEM or DER) that signs the devices' certificates",
		secCert:      "secondary signing certificate (PEM or DER)",
		primaryKey:   "primary group key, base64 (default: generated); device keys derive from it",
		secondaryKey: "secondary group key, base64 (default: generated)",
		createExample: `  dpsd enrollment-group create --enrollment-id my-group --certificate-path certs/azure-iot-test-only.intermediate.cert.pem
  dpsd enrollment-group create --enrollment-id my-group --ca-name azure-iot-test-only-root
  dpsd enrollment-group create --enrollment-id sensors --attestation-type symmetrickey`,
	},
	newRecord: func(id string) enrollmentRecord { return group{&dps.EnrollmentGroup{EnrollmentGroupID: id}} },
	decode: func(raw json.RawMessage) (enrollmentRecord, error) {
		g := &dps.EnrollmentGroup{}
		err := json.Unmarshal(raw, g)
		return group{g}, err
	},
}

// enrollmentRecord is an individual enrollment or an enrollment group as the
// commands edit and print it. What both kinds share is its Settings.
type enrollmentRecord interface {
	dps.Enrollment
	body() any // what create and update send
	// applyOwn sets the fields only this kind has, from the flags given.
	applyOwn(o *enrollOpts, f flags, in *enrollInput)
	fields(keysShown bool) [][2]string // show
	row() []string                     // list
}

type individual struct{ *dps.IndividualEnrollment }

func (r individual) body() any { return r.IndividualEnrollment }

func (r individual) applyOwn(o *enrollOpts, f flags, in *enrollInput) {
	if f.changed("device-id") {
		r.DeviceID = o.deviceID
	}
	if in.info != nil {
		r.OptionalDeviceInformation = in.info
	}
	r.RegistrationState = nil // the service's, not part of the enrollment
}

type group struct{ *dps.EnrollmentGroup }

func (r group) body() any                                 { return r.EnrollmentGroup }
func (r group) applyOwn(*enrollOpts, flags, *enrollInput) {}

// defaultWebhookAPIVersion is the shape of the allocation request dpsd sends
// a webhook when --api-version is not given.
const defaultWebhookAPIVersion = "2021-10-01"

// apply sets the fields whose flags were given.
func (o *enrollOpts) apply(f flags, in *enrollInput, r enrollmentRecord) error {
	r.applyOwn(o, f, in)
	c := r.Settings()
	if f.changed("edge-enabled") {
		c.Capabilities = &dps.DeviceCapabilities{IotEdge: o.edge.v}
	}
	if f.changed("iot-hub-host-name") {
		c.IotHubHostName = o.hubHost
	}
	if f.changed("iot-hubs") {
		c.IotHubs = o.hubs.items
	}
	if in.tags != nil || in.props != nil {
		t := cmp.Or(c.InitialTwin, &dps.InitialTwin{})
		c.InitialTwin = t
		if in.tags != nil {
			t.Tags = in.tags
		}
		if in.props != nil {
			t.Properties = &dps.InitialTwinProperties{Desired: in.props}
		}
	}
	if in.status != "" {
		c.ProvisioningStatus = in.status
	}
	if in.reprovision != nil {
		c.ReprovisionPolicy = in.reprovision
	}
	if in.allocation != "" {
		c.AllocationPolicy = in.allocation
	}
	if f.changed("issuing-ca") {
		c.CredentialPolicyName, c.ClientCertificateIssuancePolicy = o.issuingCA, nil
	}
	if o.webhook != "" || o.apiVersion != "" {
		d := cmp.Or(c.CustomAllocationDefinition, &dps.CustomAllocationDefinition{})
		setIfGiven(&d.WebhookURL, o.webhook)
		d.APIVersion = cmp.Or(o.apiVersion, d.APIVersion, defaultWebhookAPIVersion)
		if d.WebhookURL == "" {
			return withHint(errors.New("--api-version needs --webhook-url"), "give the allocation webhook with --webhook-url")
		}
		c.CustomAllocationDefinition = d
	}
	if c.AllocationPolicy == dps.AllocationCustom && c.CustomAllocationDefinition == nil {
		return withHint(errors.New("--allocation-policy custom needs --webhook-url"), "give the allocation webhook with --webhook-url (and --api-version, default "+defaultWebhookAPIVersion+")")
	}
	return nil
}

// mechanism builds the attestation of a new record.
func (o *enrollOpts) mechanism(in *enrollInput) *dps.AttestationMechanism {
	a := &dps.AttestationMechanism{Type: in.att}
	switch in.att {
	case dps.AttestationX509:
		x := &dps.X509Attestation{}
		if o.kind.group && o.caName != "" {
			x.CAReferences = &dps.X509CAReferences{Primary: o.caName, Secondary: o.secCAName}
		} else {
			*o.kind.certSlot(x) = &dps.X509Certificates{Primary: in.cert, Secondary: in.secCert}
		}
		a.X509 = x
	case dps.AttestationSymmetricKey:
		a.SymmetricKey = &dps.SymmetricKeyAttestation{PrimaryKey: o.primaryKey, SecondaryKey: o.secondaryKey}
	case dps.AttestationTPM:
		a.TPM = &dps.TPMAttestation{EndorsementKey: o.endorsementKey}
	}
	return a
}

// updateMechanism applies the attestation flags to a stored record's
// attestation (as a read returns it: keys hidden, certificates by info).
func (o *enrollOpts) updateMechanism(a *dps.AttestationMechanism, in *enrollInput) error {
	if a == nil {
		return errors.New("the stored record has no attestation")
	}
	hasCert := o.certPath != "" || o.secCertPath != "" || o.removeCert.isTrue() || o.removeSecCert.isTrue()
	hasCA := o.caName != "" || o.secCAName != ""
	hasKey := o.primaryKey != "" || o.secondaryKey != ""
	hasEK := o.endorsementKey != ""
	mismatch := func(flags string) error {
		return withHint(fmt.Errorf("%s %q uses %s attestation; %s does not apply", o.kind.noun, o.id, a.Type, flags),
			"to change the attestation mechanism, delete the %s and create it again", o.kind.noun)
	}
	switch a.Type {
	case dps.AttestationSymmetricKey:
		if hasCert || hasCA {
			return mismatch("--certificate-path/--ca-name")
		}
		if hasEK {
			return mismatch("--endorsement-key")
		}
		if hasKey {
			a.SymmetricKey = cmp.Or(a.SymmetricKey, &dps.SymmetricKeyAttestation{})
			setIfGiven(&a.SymmetricKey.PrimaryKey, o.primaryKey)
			setIfGiven(&a.SymmetricKey.SecondaryKey, o.secondaryKey)
		}
	case dps.AttestationTPM:
		if hasCert || hasCA {
			return mismatch("--certificate-path")
		}
		if hasKey {
			return mismatch("--primary-key/--secondary-key")
		}
		if hasEK {
			a.TPM = &dps.TPMAttestation{EndorsementKey: o.endorsementKey}
		}
	case dps.AttestationX509:
		if hasKey {
			return mismatch("--primary-key/--secondary-key")
		}
		if hasEK {
			return mismatch("--endorsement-key")
		}
		x := cmp.Or(a.X509, &dps.X509Attestation{})
		a.X509 = x
		if hasCA {
			if o.certPath != "" || o.secCertPath != "" {
				return withHint(errors.New("give either --certificate-path or --ca-name, not both"), "a group is signed by certificates or by uploaded CA references")
			}
			refs := cmp.Or(x.CAReferences, &dps.X509CAReferences{})
			setIfGiven(&refs.Primary, o.caName)
			setIfGiven(&refs.Secondary, o.secCAName)
			x.CAReferences, x.SigningCertificates = refs, nil
		}
		if hasCert {
			if o.kind.group && x.CAReferences != nil && (o.certPath != "" || o.secCertPath != "") {
				x.CAReferences = nil // switching from CA references to signing certificates
			}
			if o.kind.group && x.CAReferences != nil {
				refs := x.CAReferences
				if o.removeSecCert.isTrue() {
					refs.Secondary = ""
				}
				if o.removeCert.isTrue() {
					refs.Primary, refs.Secondary = refs.Secondary, ""
				}
				if refs.Primary == "" {
					return withHint(errors.New("the group would have no CA reference left"), "give --ca-name or --certificate-path")
				}
				break
			}
			certs := o.kind.certSlot(x)
			cs := cmp.Or(*certs, &dps.X509Certificates{})
			*certs = cs
			if o.removeSecCert.isTrue() {
				cs.Secondary = nil
			}
			if o.removeCert.isTrue() {
				cs.Primary, cs.Secondary = cs.Secondary, nil
			}
			if in.cert != nil {
				cs.Primary = in.cert
			}
			if in.secCert != nil {
				cs.Secondary = in.secCert
			}
			if cs.Primary == nil {
				return withHint(errors.New("the record would have no certificate left"), "an X.509 %s needs at least one certificate; give --certificate-path", o.kind.noun)
			}
		}
	}
	return nil
}
