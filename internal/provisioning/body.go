package provisioning

import (
	"bytes"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/httpx"
)

// ParseBody reads a DeviceRegistration as devices send it: a JSON object,
// or nothing at all — C# sends an empty register payload over MQTT, Python
// and Node poll with a single space, Java with null. Those mean "no body".
func ParseBody(b []byte) (*dps.DeviceRegistration, error) {
	// JSON's white space only: bytes.TrimSpace would also take a form feed,
	// say, and accept a body that is not JSON.
	t := bytes.Trim(b, " \t\r\n")
	if len(t) == 0 || string(t) == "null" {
		return nil, nil
	}
	if t[0] != '{' {
		return nil, dpserr.Malformed("the request body must be a JSON object (DeviceRegistration), e.g. {\"registrationId\":\"device-01\"}")
	}
	var body dps.DeviceRegistration
	if err := httpx.DecodeBytes(t, &body, false); err != nil {
		return nil, err
	}
	if bytes.Equal(bytes.TrimSpace(body.Payload), []byte("null")) {
		body.Payload = nil
	}
	return &body, nil
}
