package mqtt

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/dpsd/dpsd/internal/dps"
)

// The DPS topics (docs/protocol.md, "MQTT").
const (
	// ResponseFilter is the one topic filter a device may subscribe to.
	ResponseFilter = "$dps/registrations/res/#"
	registerTopic  = "$dps/registrations/PUT/iotdps-register/"
	pollTopic      = "$dps/registrations/GET/iotdps-get-operationstatus/"
	responsePrefix = "$dps/registrations/res/"
)

// Username is a parsed CONNECT user name:
// {idScope}/registrations/{registrationId}/api-version={v}[&ClientVersion={ua}].
type Username struct {
	IDScope        string
	RegistrationID string
	APIVersion     string
	// ClientVersion is the URL-decoded ClientVersion, when sent.
	ClientVersion string
}

// ParseUsername parses a CONNECT user name as every Azure device SDK writes
// it: the ID scope, the literal "registrations", the registration ID, and a
// query string after the third slash, e.g.
//
//	0ne00111111/registrations/device-01/api-version=2019-03-31&ClientVersion=azure-iot-provisioning-device%2F1.9.1
//
// The query is read leniently: keys in any case and order, unknown keys
// ignored, values that do not URL-decode kept as they are; only a non-empty
// api-version is required.
func ParseUsername(s string) (Username, error) {
	parts := strings.SplitN(s, "/", 4)
	if len(parts) < 4 || !strings.EqualFold(parts[1], "registrations") {
		return Username{}, fmt.Errorf("user name %q is not {idScope}/registrations/{registrationId}/api-version={version}", dps.Truncate(s))
	}
	u := Username{IDScope: parts[0], RegistrationID: parts[2]}
	if u.IDScope == "" {
		return Username{}, fmt.Errorf("user name %q has an empty ID scope", dps.Truncate(s))
	}
	if u.RegistrationID == "" {
		return Username{}, fmt.Errorf("user name %q has an empty registration ID", dps.Truncate(s))
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return Username{}, fmt.Errorf("user name %q contains the control character %U", dps.Truncate(s), r)
		}
	}
	for kv := range strings.SplitSeq(parts[3], "&") {
		k, v, _ := strings.Cut(kv, "=")
		if dec, err := url.QueryUnescape(v); err == nil {
			v = dec
		}
		switch {
		case strings.EqualFold(k, "api-version") && u.APIVersion == "":
			u.APIVersion = v
		case strings.EqualFold(k, "ClientVersion") && u.ClientVersion == "":
			u.ClientVersion = v
		}
	}
	if u.APIVersion == "" {
		return Username{}, fmt.Errorf("user name %q has no api-version (append /api-version=2019-03-31 after the registration ID)", dps.Truncate(s))
	}
	return u, nil
}

// RequestKind tells a register request from an operation-status poll.
type RequestKind int

const (
	Register RequestKind = iota + 1
	OperationStatus
)

func (k RequestKind) String() string {
	switch k {
	case Register:
		return "register"
	case OperationStatus:
		return "operationstatus"
	}
	return "unknown"
}

// TopicRequest is a parsed device request topic.
type TopicRequest struct {
	Kind RequestKind
	// RID is the $rid value exactly as sent: the response echoes it.
	RID string
	// OperationID is the (URL-decoded) operationId of a poll; it may be
	// empty, which the server answers with 400.
	OperationID string
}

// Topic errors. A publish on any topic but the two request topics gets
// ErrTopicNotAllowed; a request topic without $rid cannot be answered.
var (
	ErrTopicNotAllowed = errors.New("topic is not a DPS request topic")
	ErrNoRID           = errors.New("request topic has no $rid")
)

// ParseTopic parses a device publish topic:
//
//	$dps/registrations/PUT/iotdps-register/?$rid={rid}
//	$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={id}
//
// Properties after the "?" are k=v pairs joined by "&" in any order; unknown
// ones are ignored. The first $rid counts; it must not be empty or contain
// "$" (Python's response parser splits the topic on "$").
func ParseTopic(topic string) (TopicRequest, error) {
	path, query, hasQuery := strings.Cut(topic, "?")
	var r TopicRequest
	switch path {
	case registerTopic, strings.TrimSuffix(registerTopic, "/"):
		r.Kind = Register
	case pollTopic, strings.TrimSuffix(pollTopic, "/"):
		r.Kind = OperationStatus
	default:
		return r, ErrTopicNotAllowed
	}
	if !hasQuery {
		return r, ErrNoRID
	}
	ridSeen, opSeen := false, false
	for kv := range strings.SplitSeq(query, "&") {
		k, v, _ := strings.Cut(kv, "=")
		switch {
		case k == "$rid" && !ridSeen:
			r.RID, ridSeen = v, true
		case strings.EqualFold(k, "operationId") && !opSeen:
			if dec, err := url.PathUnescape(v); err == nil {
				v = dec
			}
			r.OperationID, opSeen = v, true
		}
	}
	if r.RID == "" {
		return r, ErrNoRID
	}
	if strings.ContainsAny(r.RID, "$&") {
		return r, fmt.Errorf("%w: $rid %q contains $ or &", ErrNoRID, dps.Truncate(r.RID))
	}
	return r, nil
}

// ResponseTopic is the topic of the answer to request rid:
// $dps/registrations/res/{status}/?$rid={rid}[&retry-after={n}], with $rid
// first — the C# SDK's regex requires it there.
func ResponseTopic(status int, rid string, retryAfter int) string {
	t := responsePrefix + strconv.Itoa(status) + "/?$rid=" + rid
	if retryAfter > 0 {
		t += "&retry-after=" + strconv.Itoa(retryAfter)
	}
	return t
}
