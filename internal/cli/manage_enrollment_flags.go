package cli

// The flags of the enrollment and enrollment-group verbs, named as az names
// them.

import "github.com/spf13/cobra"

// enrollOpts are the flags of the enrollment and enrollment-group verbs.
type enrollOpts struct {
	kind *enrollmentKind

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
	issuingCA                 string
	removeCert, removeSecCert optBool
	etag                      string
	showKeys                  optBool
	output                    string
	paging                    paging
}

func (o *enrollOpts) target() target { return o.kind.of(o.id) }

func (o *enrollOpts) addID(f flags) {
	f.str(&o.id, "enrollment-id", "", o.kind.help.id, o.kind.idAliases...)
	f.required("enrollment-id")
}

// addWrite adds the flags of create and update.
func (o *enrollOpts) addWrite(c *cobra.Command, create bool) {
	k := o.kind
	f := flagsOf(c)
	o.addID(f)
	if create {
		f.str(&o.attType, "attestation-type", "", k.help.attType, "at")
		if !k.group {
			f.required("attestation-type")
		}
	}
	f.str(&o.certPath, "certificate-path", "", k.help.cert, "cp")
	f.str(&o.secCertPath, "secondary-certificate-path", "", k.help.secCert, "scp")
	f.str(&o.primaryKey, "primary-key", "", k.help.primaryKey, "pk")
	f.str(&o.secondaryKey, "secondary-key", "", k.help.secondaryKey, "sk")
	if k.group {
		f.str(&o.caName, "ca-name", "", "name of an uploaded CA certificate ('dpsd certificate create') that signs the devices' certificates", "root-ca-name", "cn")
		f.str(&o.secCAName, "secondary-ca-name", "", "name of a secondary uploaded CA certificate", "secondary-root-ca-name", "scn")
	} else {
		f.str(&o.endorsementKey, "endorsement-key", "", "TPM endorsement key, base64", "ek")
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
	f.str(&o.issuingCA, "issuing-ca", "", "issuing CA ('dpsd issuing-ca create') that signs the certificates its devices request with a CSR (\"\" to stop issuing)")
	if !create {
		f.optBool(&o.removeCert, "remove-certificate", "remove the primary certificate (a secondary one becomes primary)", "rc")
		f.optBool(&o.removeSecCert, "remove-secondary-certificate", "remove the secondary certificate", "rsc")
		f.str(&o.etag, "etag", "e", "update only if the record still has this etag (default: the etag just read)")
	}
}
