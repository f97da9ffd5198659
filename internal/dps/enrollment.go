package dps

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
)

func (e *IndividualEnrollment) ID() string                    { return e.RegistrationID }
func (e *IndividualEnrollment) SetID(id string)               { e.RegistrationID = id }
func (e *IndividualEnrollment) Settings() *EnrollmentSettings { return &e.EnrollmentSettings }

func (g *EnrollmentGroup) ID() string                    { return g.EnrollmentGroupID }
func (g *EnrollmentGroup) SetID(id string)               { g.EnrollmentGroupID = id }
func (g *EnrollmentGroup) Settings() *EnrollmentSettings { return &g.EnrollmentSettings }

// Hubs are the IoT hubs the enrollment may assign its devices to: iotHubs,
// or else the one iotHubHostName names (the older way to say it). None means
// every linked hub.
func (s *EnrollmentSettings) Hubs() []string {
	if len(s.IotHubs) == 0 && s.IotHubHostName != "" {
		return []string{s.IotHubHostName}
	}
	return s.IotHubs
}

// MarshalJSON writes the members in Azure's order, in which
// optionalDeviceInformation stands among the shared settings: after
// reprovisionPolicy, before createdDateTimeUtc.
func (e IndividualEnrollment) MarshalJSON() ([]byte, error) {
	type members IndividualEnrollment // the same members, without this method
	m := members(e)
	m.OptionalDeviceInformation = nil
	b, err := marshal(m)
	if err != nil || len(e.OptionalDeviceInformation) == 0 {
		return b, err
	}
	info, err := marshal(e.OptionalDeviceInformation)
	if err != nil {
		return nil, err
	}
	// Insert before the first member that follows optionalDeviceInformation,
	// or else at the end. registrationId always precedes it.
	at := len(b) - 1
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.Token() // {
	for dec.More() {
		comma := dec.InputOffset()
		key, _ := dec.Token()
		if afterDeviceInformation[key.(string)] {
			at = int(comma)
			break
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil, err
		}
	}
	out := make([]byte, 0, len(b)+len(info)+32)
	out = append(out, b[:at]...)
	out = append(out, `,"optionalDeviceInformation":`...)
	out = append(out, info...)
	return append(out, b[at:]...), nil
}

// afterDeviceInformation are the members of the settings that follow
// reprovisionPolicy, and so optionalDeviceInformation.
var afterDeviceInformation = func() map[string]bool {
	t := reflect.TypeFor[EnrollmentSettings]()
	rp, _ := t.FieldByName("ReprovisionPolicy")
	after := map[string]bool{}
	for i := rp.Index[0] + 1; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		after[name] = true
	}
	return after
}()

// marshal leaves <, > and & as they are: the encoder that called
// MarshalJSON escapes them, or not, as it was told to.
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
