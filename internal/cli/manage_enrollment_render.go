package cli

// Printing enrollments and enrollment groups: the service's JSON with
// --output json, else name/value lines (show) and table rows (list).

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/dpsd/dpsd/internal/dps"
)

// print renders one record: JSON as the service returned it, or fields.
func (o *enrollOpts) print(s *session, raw json.RawMessage, keysShown bool) error {
	if o.output == outputJSON {
		return writeRaw(s.stdout, raw)
	}
	r, err := o.kind.decode(raw)
	if err != nil {
		return fmt.Errorf("decoding the %s: %w", o.kind.noun, err)
	}
	return writeFields(s.stdout, r.fields(keysShown))
}

func (r individual) fields(keysShown bool) [][2]string {
	en := r.IndividualEnrollment
	out := [][2]string{{"registrationId", en.RegistrationID}}
	dev := en.DeviceID
	if dev == "" {
		dev = en.RegistrationID + " (the registration ID)"
	}
	out = append(out, [2]string{"deviceId", dev})
	out = append(out, individualKind.attestationFields(en.Attestation, keysShown)...)
	out = append(out, settingsTable(r.Settings())...)
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

func (r group) fields(keysShown bool) [][2]string {
	g := r.EnrollmentGroup
	out := [][2]string{{"enrollmentGroupId", g.EnrollmentGroupID}}
	out = append(out, groupKind.attestationFields(g.Attestation, keysShown)...)
	out = append(out, settingsTable(r.Settings())...)
	return append(out, [2]string{"created", timeOf(g.CreatedDateTimeUtc)}, [2]string{"lastUpdated", timeOf(g.LastUpdatedDateTimeUtc)}, [2]string{"etag", g.Etag})
}

func (r individual) row() []string {
	return []string{r.RegistrationID, attType(r.Attestation), r.ProvisioningStatus, dash(r.DeviceID), hubsOf(r.IotHubs, r.IotHubHostName), allocationOf(r.AllocationPolicy)}
}

func (r group) row() []string {
	return []string{r.EnrollmentGroupID, attType(r.Attestation), dash(signedBy(r.Attestation)), r.ProvisioningStatus, hubsOf(r.IotHubs, r.IotHubHostName), allocationOf(r.AllocationPolicy)}
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

func (k *enrollmentKind) attestationFields(a *dps.AttestationMechanism, keysShown bool) [][2]string {
	if a == nil {
		return [][2]string{{"attestation", "-"}}
	}
	out := [][2]string{{"attestation", a.Type}}
	switch a.Type {
	case dps.AttestationX509:
		if a.X509 == nil {
			break
		}
		certs, name := *k.certSlot(a.X509), k.certField
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
	out = append(out, [2]string{"edgeEnabled", fmt.Sprint(edge)}, [2]string{"reprovisionPolicy", reprovisionName(c.ReprovisionPolicy)})
	if d := c.CustomAllocationDefinition; d != nil {
		out = append(out, [2]string{"webhookUrl", d.WebhookURL}, [2]string{"apiVersion", d.APIVersion})
	}
	if ca := c.IssuingCA(); ca != "" {
		out = append(out, [2]string{"issuingCA", ca})
	}
	return append(out, twinFields("initialTwin", c.InitialTwin)...)
}

// twinFields renders a twin's tags and desired properties as the fields
// PREFIXTags and PREFIXProperties (none when empty).
func twinFields(prefix string, t *dps.InitialTwin) [][2]string {
	if t == nil {
		return nil
	}
	var out [][2]string
	if s := compactJSON(t.Tags); s != "" {
		out = append(out, [2]string{prefix + "Tags", s})
	}
	if t.Properties != nil {
		if s := compactJSON(t.Properties.Desired); s != "" {
			out = append(out, [2]string{prefix + "Properties", s})
		}
	}
	return out
}

func reprovisionName(p *dps.ReprovisionPolicy) string {
	if p == nil {
		return dps.ReprovisionPolicyName(nil) + " (default)"
	}
	return dps.ReprovisionPolicyName(p)
}
