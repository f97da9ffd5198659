package cli

// Checking the flag values of the enrollment and enrollment-group verbs
// before anything is sent.

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/sas"
)

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
	if err := dps.ValidateID(o.kind.idKind, o.id); err != nil {
		return nil, withHint(fmt.Errorf("--enrollment-id: %v", err), "an ID has up to 128 letters, digits and - . _ :, starting with a letter or digit")
	}
	in := &enrollInput{}
	var err error
	if f.changed("attestation-type") {
		choices := []string{"x509", "symmetricKey", "tpm"}
		if o.kind.group {
			if strings.EqualFold(o.attType, "tpm") {
				return nil, withHint(errors.New("enrollment groups do not support TPM attestation"), "create an individual enrollment per TPM: 'dpsd enrollment create --attestation-type tpm --endorsement-key KEY'")
			}
			choices = choices[:2]
		}
		if in.att, err = oneOf("--attestation-type", o.attType, choices...); err != nil {
			return nil, err
		}
	}
	var secCN string
	for _, c := range []struct {
		flag, path string
		dst        **dps.X509CertificateWithInfo
		cn         *string
		groupHint  string
	}{
		{"--certificate-path", o.certPath, &in.cert, &in.certCN, "an enrollment group takes the root or intermediate CA certificate that signs the devices' certificates; for one device's certificate use 'dpsd enrollment create'"},
		{"--secondary-certificate-path", o.secCertPath, &in.secCert, &secCN, "an enrollment group takes root or intermediate CA certificates"},
	} {
		if c.path == "" {
			continue
		}
		pem, cert, err := readCertificateFile(c.flag, c.path)
		if err != nil {
			return nil, err
		}
		if o.kind.group && !cert.IsCA {
			return nil, withHint(fmt.Errorf("%s: %s (%s) is not a CA certificate", c.flag, c.path, cert.Subject), "%s", c.groupHint)
		}
		*c.dst, *c.cn = &dps.X509CertificateWithInfo{Certificate: pem}, cert.Subject.CommonName
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
	for _, j := range []struct {
		flag, v string
		dst     *json.RawMessage
	}{{"initial-twin-tags", o.tags, &in.tags}, {"initial-twin-properties", o.props, &in.props}, {"device-information", o.devInfo, &in.info}} {
		if f.changed(j.flag) {
			if *j.dst, err = jsonObjectArg("--"+j.flag, j.v); err != nil {
				return nil, err
			}
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
		p := dps.ReprovisionPolicies[name]
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
	if o.kind.group && in.att == "" {
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
		case o.kind.group && hasCert && hasCA:
			return withHint(errors.New("give either --certificate-path or --ca-name, not both"), "--certificate-path sets the signing certificate on the group; --ca-name refers to a CA uploaded with 'dpsd certificate create'")
		case o.kind.group && o.caName == "" && o.certPath == "":
			return withHint(errors.New("an X.509 enrollment group needs --certificate-path or --ca-name"), "give the root or intermediate CA certificate that signs the devices' certificates")
		case !o.kind.group && o.certPath == "":
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
