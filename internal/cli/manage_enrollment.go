package cli

// dpsd enrollment and dpsd enrollment-group: individual enrollments and
// enrollment groups, with the verbs and flags of `az iot dps enrollment` and
// `az iot dps enrollment-group`.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/spf13/cobra"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/svcclient"
)

// Reprovision policies by their az names.
var reprovisionPolicies = map[string]dps.ReprovisionPolicy{
	"reprovisionandmigratedata": {UpdateHubAssignment: true, MigrateDeviceData: true},
	"reprovisionandresetdata":   {UpdateHubAssignment: true, MigrateDeviceData: false},
	"never":                     {UpdateHubAssignment: false, MigrateDeviceData: false},
}

func reprovisionName(p *dps.ReprovisionPolicy) string {
	switch {
	case p == nil:
		return ""
	case !p.UpdateHubAssignment:
		return "never"
	case p.MigrateDeviceData:
		return "reprovisionandmigratedata"
	}
	return "reprovisionandresetdata"
}

// defaultWebhookAPIVersion is the shape of the allocation request dpsd sends
// a webhook when --api-version is not given.
const defaultWebhookAPIVersion = "2021-10-01"

// enrollOpts are the flags of the enrollment and enrollment-group verbs.
type enrollOpts struct {
	group bool

	id, attType               string
	certPath, secCertPath     string
	caName, secCAName         string
	endorsementKey            string
	primaryKey, secondaryKey  string
	deviceID                  string
	hubHost                   string
	hubs                      listValue
	tags, props, devInfo      string
	status, allocation        string
	reprovision               string
	edge                      optBool
	webhook, apiVersion       string
	removeCert, removeSecCert optBool
	etag                      string
	showKeys                  optBool
	output                    string
	paging                    paging
}

func (o *enrollOpts) target() target {
	if o.group {
		return target{cmd: "enrollment-group", noun: "enrollment group", idFlag: "--enrollment-id", id: o.id}
	}
	return target{cmd: "enrollment", noun: "enrollment", idFlag: "--enrollment-id", id: o.id}
}

func (o *enrollOpts) path(suffix string) string {
	base := "/enrollments/"
	if o.group {
		base = "/enrollmentGroups/"
	}
	return base + url.PathEscape(o.id) + suffix
}

func (o *enrollOpts) addID(f flags) {
	if o.group {
		f.str(&o.id, "enrollment-id", "", "ID of the enrollment group", "eid", "group-id", "gid")
	} else {
		f.str(&o.id, "enrollment-id", "", "ID of the enrollment: the device's registration ID (for X.509, its certificate's subject CN)", "eid")
	}
	f.required("enrollment-id")
}

// addWrite adds the flags of create and update.
func (o *enrollOpts) addWrite(c *cobra.Command, create bool) {
	f := flagsOf(c)
	o.addID(f)
	if create {
		if o.group {
			f.str(&o.attType, "attestation-type", "", "x509 or symmetrickey (default: x509 with --certificate-path or --ca-name, else symmetrickey)", "at")
		} else {
			f.str(&o.attType, "attestation-type", "", "attestation mechanism: x509, symmetrickey or tpm", "at")
			f.required("attestation-type")
		}
	}
	if o.group {
		f.str(&o.certPath, "certificate-path", "", "root or intermediate CA certificate (PEM or DER) that signs the devices' certificates", "cp")
		f.str(&o.secCertPath, "secondary-certificate-path", "", "secondary signing certificate (PEM or DER)", "scp")
		f.str(&o.caName, "ca-name", "", "name of an uploaded CA certificate ('dpsd certificate create') that signs the devices' certificates", "root-ca-name", "cn")
		f.str(&o.secCAName, "secondary-ca-name", "", "name of a secondary uploaded CA certificate", "secondary-root-ca-name", "scn")
		f.str(&o.primaryKey, "primary-key", "", "primary group key, base64 (default: generated); device keys derive from it", "pk")
		f.str(&o.secondaryKey, "secondary-key", "", "secondary group key, base64 (default: generated)", "sk")
	} else {
		f.str(&o.certPath, "certificate-path", "", "the device's certificate (PEM or DER)", "cp")
		f.str(&o.secCertPath, "secondary-certificate-path", "", "a second certificate of the device (PEM or DER)", "scp")
		f.str(&o.endorsementKey, "endorsement-key", "", "TPM endorsement key, base64", "ek")
		f.str(&o.primaryKey, "primary-key", "", "primary symmetric key, base64 (default: generated)", "pk")
		f.str(&o.secondaryKey, "secondary-key", "", "secondary symmetric key, base64 (default: generated)", "sk")
		f.str(&o.deviceID, "device-id", "", "IoT Hub device ID (default: the registration ID)", "did")
		f.str(&o.devInfo, "device-information", "", "optional device information: a JSON object, or a file holding one", "di")
	}
	f.str(&o.hubHost, "iot-hub-host-name", "", "host name of the target IoT hub (legacy; prefer --iot-hubs)", "hn", "hub-host-name")
	f.list(&o.hubs, "iot-hubs", "host names of the linked IoT hubs this enrollment may be assigned to, space- or comma-separated", "ih")
	f.str(&o.tags, "initial-twin-tags", "", "initial twin tags: a JSON object, or a file holding one", "tags")
	f.str(&o.props, "initial-twin-properties", "", "initial twin desired properties: a JSON object, or a file holding one", "props")
	f.str(&o.status, "provisioning-status", "", "enabled or disabled", "ps")
	f.str(&o.allocation, "allocation-policy", "", "hashed, geoLatency, static or custom (default: the instance's policy)", "ap")
	f.optBool(&o.edge, "edge-enabled", "the device is an IoT Edge device (true|false; bare: true)", "ee")
	f.str(&o.reprovision, "reprovision-policy", "", "on re-provisioning: reprovisionandmigratedata, reprovisionandresetdata or never", "rp")
	f.str(&o.webhook, "webhook-url", "", "custom allocation webhook URL (with --allocation-policy custom)", "wh")
	f.str(&o.apiVersion, "api-version", "", "API version of the custom allocation request (default "+defaultWebhookAPIVersion+")", "av")
	if !create {
		f.optBool(&o.removeCert, "remove-certificate", "remove the primary certificate (a secondary one becomes primary)", "rc")
		f.optBool(&o.removeSecCert, "remove-secondary-certificate", "remove the secondary certificate", "rsc")
		f.str(&o.etag, "etag", "e", "update only if the record still has this etag (default: the etag just read)")
	}
	addOutputFlag(c, &o.output)
}

// enrollInput is what the flags say, validated before any call.
type enrollInput struct {
	att                string
	cert, secCert      *dps.X509CertificateWithInfo
	certCN             string
	tags, props, info  json.RawMessage
	status, allocation string
	reprovision        *dps.ReprovisionPolicy
}

// validate checks every flag value that can be checked without the server.
func (o *enrollOpts) validate(f flags, create bool) (*enrollInput, error) {
	if err := checkOutput(o.output); err != nil {
		return nil, err
	}
	kind := "registration ID"
	if o.group {
		kind = "enrollment group ID"
	}
	if err := dps.ValidateID(kind, o.id); err != nil {
		return nil, withHint(fmt.Errorf("--enrollment-id: %v", err), "an ID has up to 128 letters, digits and - . _ :, starting with a letter or digit")
	}
	in := &enrollInput{}
	var err error
	if f.changed("attestation-type") {
		choices := []string{"x509", "symmetricKey", "tpm"}
		if o.group {
			if strings.EqualFold(o.attType, "tpm") {
				return nil, withHint(errors.New("enrollment groups do not support TPM attestation"), "create an individual enrollment per TPM: 'dpsd enrollment create --attestation-type tpm --endorsement-key KEY'")
			}
			choices = choices[:2]
		}
		if in.att, err = oneOf("--attestation-type", o.attType, choices...); err != nil {
			return nil, err
		}
	}
	if o.certPath != "" {
		pem, cert, err := readCertificateFile("--certificate-path", o.certPath)
		if err != nil {
			return nil, err
		}
		if o.group && !cert.IsCA {
			return nil, withHint(fmt.Errorf("--certificate-path: %s (%s) is not a CA certificate", o.certPath, cert.Subject),
				"an enrollment group takes the root or intermediate CA certificate that signs the devices' certificates; for one device's certificate use 'dpsd enrollment create'")
		}
		in.cert, in.certCN = &dps.X509CertificateWithInfo{Certificate: pem}, cert.Subject.CommonName
	}
	if o.secCertPath != "" {
		pem, cert, err := readCertificateFile("--secondary-certificate-path", o.secCertPath)
		if err != nil {
			return nil, err
		}
		if o.group && !cert.IsCA {
			return nil, withHint(fmt.Errorf("--secondary-certificate-path: %s (%s) is not a CA certificate", o.secCertPath, cert.Subject),
				"an enrollment group takes root or intermediate CA certificates")
		}
		in.secCert = &dps.X509CertificateWithInfo{Certificate: pem}
	}
	for _, n := range []struct{ flag, v string }{{"--ca-name", o.caName}, {"--secondary-ca-name", o.secCAName}} {
		if n.v != "" {
			if err := dps.ValidateCAName(n.v); err != nil {
				return nil, withHint(fmt.Errorf("%s: %v", n.flag, err), "'dpsd certificate list' lists the uploaded CA certificates")
			}
		}
	}
	for _, k := range []struct{ flag, v string }{{"--primary-key", o.primaryKey}, {"--secondary-key", o.secondaryKey}} {
		if k.v == "" {
			continue
		}
		b, err := sas.DecodeKey(k.v)
		if err != nil || len(b) < dps.MinSymmetricKey || len(b) > dps.MaxSymmetricKey {
			return nil, withHint(fmt.Errorf("%s is not base64 of %d to %d bytes", k.flag, dps.MinSymmetricKey, dps.MaxSymmetricKey),
				"omit %s to have the server generate a key, or make one with 'openssl rand -base64 64'", k.flag)
		}
	}
	if o.endorsementKey != "" {
		if _, err := base64.StdEncoding.DecodeString(o.endorsementKey); err != nil {
			return nil, withHint(errors.New("--endorsement-key is not base64"), "give the TPM's public endorsement key, base64 encoded")
		}
	}
	if o.deviceID != "" {
		if err := dps.ValidateDeviceID(o.deviceID); err != nil {
			return nil, withHint(fmt.Errorf("--device-id: %v", err), "omit --device-id to use the registration ID")
		}
	}
	if o.hubHost != "" {
		if err := dps.ValidateHostName(o.hubHost); err != nil {
			return nil, withHint(fmt.Errorf("--iot-hub-host-name: %v", err), "give a host name such as myhub.azure-devices.net")
		}
	}
	for _, h := range o.hubs.items {
		if err := dps.ValidateHostName(h); err != nil {
			return nil, withHint(fmt.Errorf("--iot-hubs: %v", err), "give host names of linked hubs ('dpsd linked-hub list'), separated by spaces or commas")
		}
	}
	if f.changed("initial-twin-tags") {
		if in.tags, err = jsonObjectArg("--initial-twin-tags", o.tags); err != nil {
			return nil, err
		}
	}
	if f.changed("initial-twin-properties") {
		if in.props, err = jsonObjectArg("--initial-twin-properties", o.props); err != nil {
			return nil, err
		}
	}
	if f.changed("device-information") {
		if in.info, err = jsonObjectArg("--device-information", o.devInfo); err != nil {
			return nil, err
		}
	}
	if f.changed("provisioning-status") {
		if in.status, err = oneOf("--provisioning-status", o.status, dps.ProvisioningEnabled, dps.ProvisioningDisabled); err != nil {
			return nil, err
		}
	}
	if f.changed("allocation-policy") {
		if in.allocation, err = oneOf("--allocation-policy", o.allocation, dps.AllocationHashed, dps.AllocationGeoLatency, dps.AllocationStatic, dps.AllocationCustom); err != nil {
			return nil, err
		}
	}
	if f.changed("reprovision-policy") {
		name, err := oneOf("--reprovision-policy", o.reprovision, "reprovisionandmigratedata", "reprovisionandresetdata", "never")
		if err != nil {
			return nil, err
		}
		p := reprovisionPolicies[name]
		in.reprovision = &p
	}
	if o.webhook != "" {
		u, err := url.Parse(o.webhook)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, withHint(fmt.Errorf("--webhook-url %q is not an absolute http(s) URL", o.webhook), "give the URL of the allocation function, e.g. https://alloc.example.com/api/allocate?code=KEY")
		}
	}
	if create {
		if err := o.checkCreate(in); err != nil {
			return nil, err
		}
	}
	return in, nil
}

// checkCreate decides and checks the attestation mechanism of a new record.
func (o *enrollOpts) checkCreate(in *enrollInput) error {
	hasCert := o.certPath != "" || o.secCertPath != ""
	hasCA := o.caName != "" || o.secCAName != ""
	hasKey := o.primaryKey != "" || o.secondaryKey != ""
	hasEK := o.endorsementKey != ""
	if o.group && in.att == "" {
		in.att = dps.AttestationSymmetricKey
		if hasCert || hasCA {
			in.att = dps.AttestationX509
		}
	}
	not := func(flag, applies string) error {
		return withHint(fmt.Errorf("%s does not apply to --attestation-type %s", flag, in.att), "%s goes with %s", flag, applies)
	}
	switch in.att {
	case dps.AttestationX509:
		switch {
		case hasKey:
			return not("--primary-key/--secondary-key", "--attestation-type symmetrickey")
		case hasEK:
			return not("--endorsement-key", "--attestation-type tpm")
		case o.group && hasCert && hasCA:
			return withHint(errors.New("give either --certificate-path or --ca-name, not both"), "--certificate-path sets the signing certificate on the group; --ca-name refers to a CA uploaded with 'dpsd certificate create'")
		case o.group && o.caName == "" && o.certPath == "":
			return withHint(errors.New("an X.509 enrollment group needs --certificate-path or --ca-name"), "give the root or intermediate CA certificate that signs the devices' certificates")
		case !o.group && o.certPath == "":
			return withHint(errors.New("--attestation-type x509 needs --certificate-path"), "give the device's certificate; --secondary-certificate-path adds a second one")
		}
	case dps.AttestationSymmetricKey:
		switch {
		case hasCert:
			return not("--certificate-path", "--attestation-type x509")
		case hasCA:
			return not("--ca-name", "--attestation-type x509")
		case hasEK:
			return not("--endorsement-key", "--attestation-type tpm")
		}
	case dps.AttestationTPM:
		switch {
		case hasCert:
			return not("--certificate-path", "--attestation-type x509")
		case hasKey:
			return not("--primary-key/--secondary-key", "--attestation-type symmetrickey")
		case !hasEK:
			return withHint(errors.New("--attestation-type tpm needs --endorsement-key"), "give the TPM's public endorsement key, base64 encoded")
		}
	}
	return nil
}

// mechanism builds the attestation of a new record.
func (o *enrollOpts) mechanism(in *enrollInput) *dps.AttestationMechanism {
	a := &dps.AttestationMechanism{Type: in.att}
	switch in.att {
	case dps.AttestationX509:
		x := &dps.X509Attestation{}
		switch {
		case o.group && o.caName != "":
			x.CAReferences = &dps.X509CAReferences{Primary: o.caName, Secondary: o.secCAName}
		case o.group:
			x.SigningCertificates = &dps.X509Certificates{Primary: in.cert, Secondary: in.secCert}
		default:
			x.ClientCertificates = &dps.X509Certificates{Primary: in.cert, Secondary: in.secCert}
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
		return withHint(fmt.Errorf("%s %q uses %s attestation; %s does not apply", o.target().noun, o.id, a.Type, flags),
			"to change the attestation mechanism, delete the %s and create it again", o.target().noun)
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
			if a.SymmetricKey == nil {
				a.SymmetricKey = &dps.SymmetricKeyAttestation{}
			}
			if o.primaryKey != "" {
				a.SymmetricKey.PrimaryKey = o.primaryKey
			}
			if o.secondaryKey != "" {
				a.SymmetricKey.SecondaryKey = o.secondaryKey
			}
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
		if a.X509 == nil {
			a.X509 = &dps.X509Attestation{}
		}
		x := a.X509
		if hasCA {
			if o.certPath != "" || o.secCertPath != "" {
				return withHint(errors.New("give either --certificate-path or --ca-name, not both"), "a group is signed by certificates or by uploaded CA references")
			}
			refs := x.CAReferences
			if refs == nil {
				refs = &dps.X509CAReferences{}
			}
			if o.caName != "" {
				refs.Primary = o.caName
			}
			if o.secCAName != "" {
				refs.Secondary = o.secCAName
			}
			x.CAReferences, x.SigningCertificates = refs, nil
		}
		if hasCert {
			if o.group && x.CAReferences != nil && (o.certPath != "" || o.secCertPath != "") {
				x.CAReferences = nil // switching from CA references to signing certificates
			}
			if o.group && x.CAReferences != nil {
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
			certs := &x.ClientCertificates
			if o.group {
				certs = &x.SigningCertificates
			}
			if *certs == nil {
				*certs = &dps.X509Certificates{}
			}
			cs := *certs
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
				return withHint(errors.New("the record would have no certificate left"), "an X.509 %s needs at least one certificate; give --certificate-path", o.target().noun)
			}
		}
	}
	return nil
}

// apply sets the fields whose flags were given.
func (o *enrollOpts) apply(f flags, in *enrollInput, c *dps.EnrollmentSettings) error {
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
		if c.InitialTwin == nil {
			c.InitialTwin = &dps.InitialTwin{}
		}
		t := c.InitialTwin
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
	if o.webhook != "" || o.apiVersion != "" {
		d := c.CustomAllocationDefinition
		if d == nil {
			d = &dps.CustomAllocationDefinition{}
		}
		if o.webhook != "" {
			d.WebhookURL = o.webhook
		}
		if o.apiVersion != "" {
			d.APIVersion = o.apiVersion
		}
		if d.APIVersion == "" {
			d.APIVersion = defaultWebhookAPIVersion
		}
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

func newEnrollmentCmd(e *env) *cobra.Command {
	cf := &connFlags{}
	c := nounCmd("enrollment", "Manage individual enrollments (az iot dps enrollment)",
		`Manage individual enrollments: one device each, attested by an X.509
certificate, a symmetric key or a TPM endorsement key.

Commands talk to the local server (./dpsd-data, or --data / DPSD_DATA) unless
--login (or DPSD_LOGIN) gives a service connection string.`, cf)
	c.AddCommand(
		enrollmentCreateCmd(e, cf, false),
		enrollmentShowCmd(e, cf, false),
		enrollmentListCmd(e, cf, false),
		enrollmentUpdateCmd(e, cf, false),
		enrollmentDeleteCmd(e, cf, false),
	)
	return c
}

func newEnrollmentGroupCmd(e *env) *cobra.Command {
	cf := &connFlags{}
	c := nounCmd("enrollment-group", "Manage enrollment groups (az iot dps enrollment-group)",
		`Manage enrollment groups: devices that share an X.509 signing certificate
(or an uploaded CA), or a group key from which each device's key derives.

Commands talk to the local server (./dpsd-data, or --data / DPSD_DATA) unless
--login (or DPSD_LOGIN) gives a service connection string.`, cf)
	c.AddCommand(
		enrollmentCreateCmd(e, cf, true),
		enrollmentShowCmd(e, cf, true),
		enrollmentListCmd(e, cf, true),
		enrollmentUpdateCmd(e, cf, true),
		enrollmentDeleteCmd(e, cf, true),
		computeDeviceKeyCmd(e, cf),
	)
	return c
}

func enrollmentCreateCmd(e *env, cf *connFlags, group bool) *cobra.Command {
	o := &enrollOpts{group: group}
	c := &cobra.Command{Use: "create", Short: "Create " + map[bool]string{false: "an individual enrollment", true: "an enrollment group"}[group]}
	if group {
		c.Example = `  dpsd enrollment-group create --enrollment-id my-group --certificate-path certs/azure-iot-test-only.intermediate.cert.pem
  dpsd enrollment-group create --enrollment-id my-group --ca-name azure-iot-test-only-root
  dpsd enrollment-group create --enrollment-id sensors --attestation-type symmetrickey`
	} else {
		c.Example = `  dpsd enrollment create --enrollment-id my-x509-device --attestation-type x509 --certificate-path device-cert.pem
  dpsd enrollment create --enrollment-id sensor-1 --attestation-type symmetrickey
  dpsd enrollment create --enrollment-id tpm-1 --attestation-type tpm --endorsement-key AToAAQAL...`
	}
	c.RunE = func(c *cobra.Command, _ []string) error {
		f := flagsOf(c)
		in, err := o.validate(f, true)
		if err != nil {
			return err
		}
		if !o.group && in.att == dps.AttestationX509 && in.certCN != "" && !strings.EqualFold(in.certCN, o.id) {
			warnf(e.stderr, "the certificate's subject CN is %q but --enrollment-id is %q; the device registers with its CN as registration ID", in.certCN, o.id)
		}
		var body any
		if o.group {
			g := &dps.EnrollmentGroup{EnrollmentGroupID: o.id, EnrollmentSettings: dps.EnrollmentSettings{Attestation: o.mechanism(in)}}
			if err := o.apply(f, in, g.Settings()); err != nil {
				return err
			}
			body = g
		} else {
			en := &dps.IndividualEnrollment{RegistrationID: o.id, DeviceID: o.deviceID, EnrollmentSettings: dps.EnrollmentSettings{Attestation: o.mechanism(in)}, OptionalDeviceInformation: in.info}
			if err := o.apply(f, in, en.Settings()); err != nil {
				return err
			}
			body = en
		}
		return o.write(c.Context(), e, cf, body, "")
	}
	o.addWrite(c, true)
	return leafCmd(c)
}

// write PUTs the record and prints the answer.
func (o *enrollOpts) write(ctx context.Context, e *env, cf *connFlags, body any, ifMatch string) error {
	cl, err := cf.client(ctx, e.getenv)
	if err != nil {
		return err
	}
	return o.put(ctx, e, cl, body, ifMatch)
}

func (o *enrollOpts) put(ctx context.Context, e *env, cl *svcclient.Client, body any, ifMatch string) error {
	var raw json.RawMessage
	if _, err := do(ctx, cl, o.target(), svcclient.Request{Method: http.MethodPut, Path: o.path(""), IfMatch: ifMatch, Body: body}, &raw); err != nil {
		return err
	}
	return o.print(e, raw, true)
}

// print renders one record: JSON as the service returned it, or fields.
func (o *enrollOpts) print(e *env, raw json.RawMessage, keysShown bool) error {
	if o.output == outputJSON {
		return writeRaw(e.stdout, raw)
	}
	if o.group {
		var g dps.EnrollmentGroup
		if err := json.Unmarshal(raw, &g); err != nil {
			return fmt.Errorf("decoding the enrollment group: %w", err)
		}
		return writeFields(e.stdout, groupFieldsTable(&g, keysShown))
	}
	var en dps.IndividualEnrollment
	if err := json.Unmarshal(raw, &en); err != nil {
		return fmt.Errorf("decoding the enrollment: %w", err)
	}
	return writeFields(e.stdout, enrollmentFieldsTable(&en, keysShown))
}

func enrollmentShowCmd(e *env, cf *connFlags, group bool) *cobra.Command {
	o := &enrollOpts{group: group}
	c := &cobra.Command{Use: "show", Short: "Show " + map[bool]string{false: "an individual enrollment", true: "an enrollment group"}[group]}
	c.RunE = func(c *cobra.Command, _ []string) error {
		if err := checkOutput(o.output); err != nil {
			return err
		}
		ctx := c.Context()
		cl, err := cf.client(ctx, e.getenv)
		if err != nil {
			return err
		}
		var raw json.RawMessage
		if _, err := do(ctx, cl, o.target(), svcclient.Request{Method: http.MethodGet, Path: o.path("")}, &raw); err != nil {
			return err
		}
		if !o.showKeys.isTrue() {
			return o.print(e, raw, false)
		}
		var att json.RawMessage
		if _, err := do(ctx, cl, o.target(), svcclient.Request{Method: http.MethodPost, Path: o.path("/attestationmechanism")}, &att); err != nil {
			return err
		}
		merged, err := mergeAttestation(raw, att)
		if err != nil {
			return err
		}
		return o.print(e, merged, true)
	}
	f := flagsOf(c)
	o.addID(f)
	f.optBool(&o.showKeys, "show-keys", "include the symmetric keys (and certificates) of the attestation", "keys")
	addOutputFlag(c, &o.output)
	return leafCmd(c)
}

// mergeAttestation replaces the attestation of a record with the one the
// attestationmechanism call returned, keeping the rest as the service sent it.
func mergeAttestation(record, att json.RawMessage) (json.RawMessage, error) {
	var fields []struct {
		k string
		v json.RawMessage
	}
	dec := json.NewDecoder(strings.NewReader(string(record)))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, errors.New("the service returned a record that is not a JSON object")
	}
	found := false
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		k, _ := t.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		if k == "attestation" {
			v, found = att, true
		}
		fields = append(fields, struct {
			k string
			v json.RawMessage
		}{k, v})
	}
	if !found {
		fields = append(fields, struct {
			k string
			v json.RawMessage
		}{"attestation", att})
	}
	var b strings.Builder
	b.WriteByte('{')
	for i, f := range fields {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(f.k)
		b.Write(k)
		b.WriteByte(':')
		b.Write(f.v)
	}
	b.WriteByte('}')
	return json.RawMessage(b.String()), nil
}

func enrollmentListCmd(e *env, cf *connFlags, group bool) *cobra.Command {
	o := &enrollOpts{group: group}
	c := &cobra.Command{Use: "list", Short: "List " + map[bool]string{false: "individual enrollments", true: "enrollment groups"}[group]}
	c.RunE = func(c *cobra.Command, _ []string) error {
		if err := checkOutput(o.output); err != nil {
			return err
		}
		if err := o.paging.check(); err != nil {
			return err
		}
		ctx := c.Context()
		cl, err := cf.client(ctx, e.getenv)
		if err != nil {
			return err
		}
		path, q := "/enrollments/query", "SELECT * FROM enrollments"
		if o.group {
			path, q = "/enrollmentGroups/query", "SELECT * FROM enrollmentGroups"
		}
		t := o.target()
		t.id = ""
		items, err := queryAll(ctx, cl, t, path, dps.QuerySpecification{Query: q}, o.paging)
		if err != nil {
			return err
		}
		if o.output == outputJSON {
			return writeJSON(e.stdout, items)
		}
		var rows [][]string
		for _, raw := range items {
			if o.group {
				var g dps.EnrollmentGroup
				if err := json.Unmarshal(raw, &g); err != nil {
					return fmt.Errorf("decoding an enrollment group: %w", err)
				}
				rows = append(rows, []string{g.EnrollmentGroupID, attType(g.Attestation), dash(signedBy(g.Attestation)), g.ProvisioningStatus, hubsOf(g.IotHubs, g.IotHubHostName), allocationOf(g.AllocationPolicy)})
				continue
			}
			var en dps.IndividualEnrollment
			if err := json.Unmarshal(raw, &en); err != nil {
				return fmt.Errorf("decoding an enrollment: %w", err)
			}
			rows = append(rows, []string{en.RegistrationID, attType(en.Attestation), en.ProvisioningStatus, dash(en.DeviceID), hubsOf(en.IotHubs, en.IotHubHostName), allocationOf(en.AllocationPolicy)})
		}
		if o.group {
			return writeTable(e.stdout, []string{"GROUP ID", "ATTESTATION", "SIGNED BY", "STATUS", "HUBS", "ALLOCATION"}, rows)
		}
		return writeTable(e.stdout, []string{"REGISTRATION ID", "ATTESTATION", "STATUS", "DEVICE ID", "HUBS", "ALLOCATION"}, rows)
	}
	f := flagsOf(c)
	o.paging.add(f)
	addOutputFlag(c, &o.output)
	return leafCmd(c)
}

func enrollmentUpdateCmd(e *env, cf *connFlags, group bool) *cobra.Command {
	o := &enrollOpts{group: group}
	c := &cobra.Command{
		Use:   "update",
		Short: "Update " + map[bool]string{false: "an individual enrollment", true: "an enrollment group"}[group],
		Long: `Read the record, change what the flags say, and write it back under
If-Match with the etag just read (or --etag): if someone changed it in between,
the write fails with HTTP 412 and nothing is lost.`,
	}
	c.RunE = func(c *cobra.Command, _ []string) error {
		f := flagsOf(c)
		in, err := o.validate(f, false)
		if err != nil {
			return err
		}
		ctx := c.Context()
		cl, err := cf.client(ctx, e.getenv)
		if err != nil {
			return err
		}
		var raw json.RawMessage
		if _, err := do(ctx, cl, o.target(), svcclient.Request{Method: http.MethodGet, Path: o.path("")}, &raw); err != nil {
			return err
		}
		var body any
		var etag string
		if o.group {
			var g dps.EnrollmentGroup
			if err := json.Unmarshal(raw, &g); err != nil {
				return fmt.Errorf("decoding the enrollment group: %w", err)
			}
			if err := o.updateMechanism(g.Attestation, in); err != nil {
				return err
			}
			if err := o.apply(f, in, g.Settings()); err != nil {
				return err
			}
			body, etag = &g, g.Etag
		} else {
			var en dps.IndividualEnrollment
			if err := json.Unmarshal(raw, &en); err != nil {
				return fmt.Errorf("decoding the enrollment: %w", err)
			}
			if err := o.updateMechanism(en.Attestation, in); err != nil {
				return err
			}
			if err := o.apply(f, in, en.Settings()); err != nil {
				return err
			}
			if f.changed("device-id") {
				en.DeviceID = o.deviceID
			}
			if in.info != nil {
				en.OptionalDeviceInformation = in.info
			}
			en.RegistrationState = nil
			body, etag = &en, en.Etag
		}
		if o.etag != "" {
			etag = o.etag
		}
		if etag == "" {
			etag = "*"
		}
		return o.put(ctx, e, cl, body, etag)
	}
	o.addWrite(c, false)
	return leafCmd(c)
}

func enrollmentDeleteCmd(e *env, cf *connFlags, group bool) *cobra.Command {
	o := &enrollOpts{group: group}
	c := &cobra.Command{
		Use:   "delete",
		Short: "Delete " + map[bool]string{false: "an individual enrollment", true: "an enrollment group"}[group],
		Long: `Delete the record (only if it still has --etag, when given). Devices
already provisioned stay in their IoT hub; their registration records stay
until 'dpsd registration delete'.`,
	}
	c.RunE = func(c *cobra.Command, _ []string) error {
		ctx := c.Context()
		cl, err := cf.client(ctx, e.getenv)
		if err != nil {
			return err
		}
		_, err = do(ctx, cl, o.target(), svcclient.Request{Method: http.MethodDelete, Path: o.path(""), IfMatch: o.etag}, nil)
		return err
	}
	f := flagsOf(c)
	o.addID(f)
	f.str(&o.etag, "etag", "e", "delete only if the record still has this etag")
	return leafCmd(c)
}

func computeDeviceKeyCmd(e *env, cf *connFlags) *cobra.Command {
	o := &enrollOpts{group: true}
	var key, regID string
	c := &cobra.Command{
		Use:   "compute-device-key",
		Short: "Derive a device's symmetric key from its group key",
		Long: `Print the symmetric key of one device of a symmetric-key enrollment group:
base64(HMAC-SHA256(group key, registration ID)). Give the group key with --key,
or the group with --enrollment-id to use its primary key.`,
		Example: `  dpsd enrollment-group compute-device-key --key GROUPKEY --registration-id sensor-7
  dpsd enrollment-group compute-device-key --enrollment-id sensors --registration-id sensor-7`,
	}
	c.RunE = func(c *cobra.Command, _ []string) error {
		if err := checkOutput(o.output); err != nil {
			return err
		}
		if err := dps.ValidateID("registration ID", regID); err != nil {
			return withHint(fmt.Errorf("--registration-id: %v", err), "give the device's registration ID")
		}
		if key == "" && o.id == "" {
			return withHint(errors.New("give --key or --enrollment-id"), "--key takes the group's key; --enrollment-id reads the group's primary key from the server")
		}
		if key == "" {
			ctx := c.Context()
			cl, err := cf.client(ctx, e.getenv)
			if err != nil {
				return err
			}
			var att dps.AttestationMechanism
			if _, err := do(ctx, cl, o.target(), svcclient.Request{Method: http.MethodPost, Path: o.path("/attestationmechanism")}, &att); err != nil {
				return err
			}
			if att.SymmetricKey == nil || att.SymmetricKey.PrimaryKey == "" {
				return withHint(fmt.Errorf("enrollment group %q uses %s attestation, not a symmetric key", o.id, att.Type), "device keys derive only from symmetric-key groups")
			}
			key = att.SymmetricKey.PrimaryKey
		}
		k, err := sas.DecodeKey(key)
		if err != nil {
			return withHint(errors.New("--key is not base64"), "give the group's primary or secondary key as 'dpsd enrollment-group show --show-keys' prints it")
		}
		dk := base64.StdEncoding.EncodeToString(sas.DeriveDeviceKey(k, regID))
		if o.output == outputJSON {
			return writeJSON(e.stdout, dk)
		}
		_, err = fmt.Fprintln(e.stdout, dk)
		return err
	}
	f := flagsOf(c)
	f.str(&key, "key", "", "the group's symmetric key, base64", "symmetric-key")
	f.str(&regID, "registration-id", "", "the device's registration ID", "rid")
	f.str(&o.id, "enrollment-id", "", "read the key of this enrollment group from the server (instead of --key)", "eid", "group-id", "gid")
	f.required("registration-id")
	addOutputFlag(c, &o.output)
	return leafCmd(c)
}

// Table rendering.

func attType(a *dps.AttestationMechanism) string {
	if a == nil {
		return "-"
	}
	return a.Type
}

func signedBy(a *dps.AttestationMechanism) string {
	if a == nil || a.X509 == nil {
		return ""
	}
	if r := a.X509.CAReferences; r != nil && r.Primary != "" {
		return "CA " + r.Primary
	}
	if s := a.X509.SigningCertificates; s != nil && s.Primary != nil && s.Primary.Info != nil {
		return s.Primary.Info.SubjectName
	}
	return ""
}

func hubsOf(hubs []string, legacy string) string {
	if len(hubs) == 0 {
		return dash(legacy)
	}
	return strings.Join(hubs, ",")
}

func allocationOf(p string) string {
	if p == "" {
		return "(default)"
	}
	return p
}

func certSummary(c *dps.X509CertificateWithInfo) string {
	if c == nil {
		return ""
	}
	if c.Info == nil {
		return "(certificate)"
	}
	s := c.Info.SubjectName
	var extra []string
	if c.Info.SHA1Thumbprint != "" {
		extra = append(extra, "SHA-1 "+c.Info.SHA1Thumbprint)
	}
	if c.Info.NotAfterUtc != nil {
		extra = append(extra, "expires "+c.Info.NotAfterUtc.UTC().Format("2006-01-02"))
	}
	if len(extra) > 0 {
		s += " (" + strings.Join(extra, ", ") + ")"
	}
	return s
}

func attestationFields(a *dps.AttestationMechanism, keysShown bool, group bool) [][2]string {
	if a == nil {
		return [][2]string{{"attestation", "-"}}
	}
	out := [][2]string{{"attestation", a.Type}}
	switch a.Type {
	case dps.AttestationX509:
		if a.X509 == nil {
			break
		}
		certs := a.X509.ClientCertificates
		name := "certificate"
		if group {
			certs, name = a.X509.SigningCertificates, "signingCertificate"
		}
		if certs != nil {
			if certs.Primary != nil {
				out = append(out, [2]string{name, certSummary(certs.Primary)})
			}
			if certs.Secondary != nil {
				out = append(out, [2]string{"secondary " + name, certSummary(certs.Secondary)})
			}
		}
		if r := a.X509.CAReferences; r != nil {
			out = append(out, [2]string{"caName", r.Primary})
			if r.Secondary != "" {
				out = append(out, [2]string{"secondaryCaName", r.Secondary})
			}
		}
	case dps.AttestationSymmetricKey:
		pk, sk := "(hidden; use --show-keys)", "(hidden; use --show-keys)"
		if keysShown && a.SymmetricKey != nil {
			pk, sk = dash(a.SymmetricKey.PrimaryKey), dash(a.SymmetricKey.SecondaryKey)
		}
		out = append(out, [2]string{"primaryKey", pk}, [2]string{"secondaryKey", sk})
	case dps.AttestationTPM:
		if a.TPM != nil {
			out = append(out, [2]string{"endorsementKey", a.TPM.EndorsementKey})
			if a.TPM.StorageRootKey != "" {
				out = append(out, [2]string{"storageRootKey", a.TPM.StorageRootKey})
			}
		}
	}
	return out
}

func settingsTable(c *dps.EnrollmentSettings) [][2]string {
	out := [][2]string{
		{"provisioningStatus", dash(c.ProvisioningStatus)},
		{"allocationPolicy", allocationOf(c.AllocationPolicy)},
		{"iotHubs", hubsOf(c.IotHubs, "")},
	}
	if c.IotHubHostName != "" {
		out = append(out, [2]string{"iotHubHostName", c.IotHubHostName})
	}
	edge := false
	if c.Capabilities != nil {
		edge = c.Capabilities.IotEdge
	}
	out = append(out, [2]string{"edgeEnabled", fmt.Sprint(edge)}, [2]string{"reprovisionPolicy", dash(reprovisionName(c.ReprovisionPolicy))})
	if d := c.CustomAllocationDefinition; d != nil {
		out = append(out, [2]string{"webhookUrl", d.WebhookURL}, [2]string{"apiVersion", d.APIVersion})
	}
	if t := c.InitialTwin; t != nil {
		if s := compactJSON(t.Tags); s != "" {
			out = append(out, [2]string{"initialTwinTags", s})
		}
		if t.Properties != nil {
			if s := compactJSON(t.Properties.Desired); s != "" {
				out = append(out, [2]string{"initialTwinProperties", s})
			}
		}
	}
	return out
}

func timeOf(t *dps.Time) string {
	if t == nil {
		return "-"
	}
	return t.Format()
}

func enrollmentFieldsTable(en *dps.IndividualEnrollment, keysShown bool) [][2]string {
	out := [][2]string{{"registrationId", en.RegistrationID}}
	dev := en.DeviceID
	if dev == "" {
		dev = en.RegistrationID + " (the registration ID)"
	}
	out = append(out, [2]string{"deviceId", dev})
	out = append(out, attestationFields(en.Attestation, keysShown, false)...)
	out = append(out, settingsTable(en.Settings())...)
	if s := compactJSON(en.OptionalDeviceInformation); s != "" {
		out = append(out, [2]string{"deviceInformation", s})
	}
	if r := en.RegistrationState; r != nil {
		st := r.Status
		if r.AssignedHub != "" {
			st += " to " + r.AssignedHub
		}
		out = append(out, [2]string{"registration", st})
	}
	return append(out, [2]string{"created", timeOf(en.CreatedDateTimeUtc)}, [2]string{"lastUpdated", timeOf(en.LastUpdatedDateTimeUtc)}, [2]string{"etag", en.Etag})
}

func groupFieldsTable(g *dps.EnrollmentGroup, keysShown bool) [][2]string {
	out := [][2]string{{"enrollmentGroupId", g.EnrollmentGroupID}}
	out = append(out, attestationFields(g.Attestation, keysShown, true)...)
	out = append(out, settingsTable(g.Settings())...)
	return append(out, [2]string{"created", timeOf(g.CreatedDateTimeUtc)}, [2]string{"lastUpdated", timeOf(g.LastUpdatedDateTimeUtc)}, [2]string{"etag", g.Etag})
}
