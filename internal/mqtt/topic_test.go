package mqtt

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// parseCase is an input of a parser and what it must return: the value
// (ok cases), or an error that is want (bad cases; nil for any error).
type parseCase[T any] struct {
	in   string
	want T
}

// testParser runs the ok and the bad cases of a parser.
func testParser[T comparable](t *testing.T, name string, parse func(string) (T, error), ok map[string]parseCase[T], bad map[string]parseCase[error]) {
	for n, tc := range ok {
		t.Run("ok/"+n, func(t *testing.T) {
			if got, err := parse(tc.in); err != nil || got != tc.want {
				t.Errorf("%s(%q) = %+v, %v; want %+v", name, tc.in, got, err, tc.want)
			}
		})
	}
	for n, tc := range bad {
		t.Run("bad/"+n, func(t *testing.T) {
			if got, err := parse(tc.in); err == nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("%s(%q) = %+v, %v; want an error %v", name, tc.in, got, err, tc.want)
			}
		})
	}
}

func TestParseUsername(t *testing.T) {
	ok := map[string]parseCase[Username]{
		"node": {"0ne00111111/registrations/device-01/api-version=2019-03-31&ClientVersion=azure-iot-provisioning-device%2F1.9.1",
			Username{"0ne00111111", "device-01", "2019-03-31", "azure-iot-provisioning-device/1.9.1"}},
		"c sdk": {"0ne0045B3C6/registrations/dev/api-version=2021-06-01&ClientVersion=1.15.0",
			Username{"0ne0045B3C6", "dev", "2021-06-01", "1.15.0"}},
		"embedded c without client version": {"0ne00111111/registrations/paho-sample-device1/api-version=2019-03-31",
			Username{"0ne00111111", "paho-sample-device1", "2019-03-31", ""}},
		"python": {"0ne00111111/registrations/dev/api-version=2019-03-31&ClientVersion=azure-iot-device-provisioning-py%2F2.14.0%28native%3B%20Linux%29",
			Username{"0ne00111111", "dev", "2019-03-31", "azure-iot-device-provisioning-py/2.14.0(native; Linux)"}},
		"java: client version is the api version": {"0ne00111111/registrations/dev/api-version=2019-03-31&ClientVersion=2019-03-31",
			Username{"0ne00111111", "dev", "2019-03-31", "2019-03-31"}},
		"lower-case clientVersion, keys in any order": {"s/registrations/d/clientVersion=x&api-version=1",
			Username{"s", "d", "1", "x"}},
		"upper-case registrations": {"s/Registrations/d/api-version=1", Username{"s", "d", "1", ""}},
		"bad escape kept raw":      {"s/registrations/d/api-version=1&ClientVersion=50%", Username{"s", "d", "1", "50%"}},
		"slash in client version":  {"s/registrations/d/api-version=1&ClientVersion=a/b", Username{"s", "d", "1", "a/b"}},
		"unknown keys ignored":     {"s/registrations/d/foo&api-version=1&x=y", Username{"s", "d", "1", ""}},
		"first api-version counts": {"s/registrations/d/api-version=1&api-version=2", Username{"s", "d", "1", ""}},
		"colon and dot in id":      {"s/registrations/a.b:c_d-e/api-version=1", Username{"s", "a.b:c_d-e", "1", ""}},
	}
	bad := map[string]parseCase[error]{
		"empty":                 {"", nil},
		"scope only":            {"0ne00111111", nil},
		"no query":              {"s/registrations/d", nil},
		"empty query":           {"s/registrations/d/", nil},
		"no api-version":        {"s/registrations/d/ClientVersion=1", nil},
		"empty api-version":     {"s/registrations/d/api-version=", nil},
		"wrong literal":         {"s/devices/d/api-version=1", nil},
		"empty scope":           {"/registrations/d/api-version=1", nil},
		"empty registration ID": {"s/registrations//api-version=1", nil},
		"iot hub user name":     {"hub.azure-devices.net/device-01/?api-version=2021-04-12", nil},
		"control character":     {"s/registrations/d\n/api-version=1", nil},
	}
	testParser(t, "ParseUsername", ParseUsername, ok, bad)
}

func TestParseTopic(t *testing.T) {
	ok := map[string]parseCase[TopicRequest]{
		"register int rid":                {"$dps/registrations/PUT/iotdps-register/?$rid=1", TopicRequest{Register, "1", ""}},
		"register uuid rid":               {"$dps/registrations/PUT/iotdps-register/?$rid=6f1e1c3a-4b6f-4c1b-9d1e-0c6f5a0f3b2a", TopicRequest{Register, "6f1e1c3a-4b6f-4c1b-9d1e-0c6f5a0f3b2a", ""}},
		"register python quoted rid":      {"$dps/registrations/PUT/iotdps-register/?$rid=a%20b", TopicRequest{Register, "a%20b", ""}},
		"register without trailing slash": {"$dps/registrations/PUT/iotdps-register?$rid=2", TopicRequest{Register, "2", ""}},
		"register extra properties":       {"$dps/registrations/PUT/iotdps-register/?$rid=3&x=y", TopicRequest{Register, "3", ""}},
		"poll node": {"$dps/registrations/GET/iotdps-get-operationstatus/?$rid=9f0c&operationId=5.316aac5bdc130deb.b1e02da8-c3a0-4ff2-a121-7ea7a6b7f550",
			TopicRequest{OperationStatus, "9f0c", "5.316aac5bdc130deb.b1e02da8-c3a0-4ff2-a121-7ea7a6b7f550"}},
		"poll operationId first":   {"$dps/registrations/GET/iotdps-get-operationstatus/?operationId=op&$rid=4", TopicRequest{OperationStatus, "4", "op"}},
		"poll escaped operationId": {"$dps/registrations/GET/iotdps-get-operationstatus/?$rid=4&operationId=a%2Eb", TopicRequest{OperationStatus, "4", "a.b"}},
		"poll without operationId": {"$dps/registrations/GET/iotdps-get-operationstatus/?$rid=5", TopicRequest{OperationStatus, "5", ""}},
		"first rid counts":         {"$dps/registrations/PUT/iotdps-register/?$rid=6&$rid=7", TopicRequest{Register, "6", ""}},
	}
	bad := map[string]parseCase[error]{
		"outside dps":          {"devices/d/messages/events/", ErrTopicNotAllowed},
		"response topic":       {"$dps/registrations/res/200/?$rid=1", ErrTopicNotAllowed},
		"wrong method":         {"$dps/registrations/GET/iotdps-register/?$rid=1", ErrTopicNotAllowed},
		"case differs":         {"$DPS/registrations/PUT/iotdps-register/?$rid=1", ErrTopicNotAllowed},
		"empty":                {"", ErrTopicNotAllowed},
		"no query":             {"$dps/registrations/PUT/iotdps-register/", ErrNoRID},
		"no rid":               {"$dps/registrations/PUT/iotdps-register/?rid=1", ErrNoRID},
		"empty rid":            {"$dps/registrations/PUT/iotdps-register/?$rid=", ErrNoRID},
		"rid with dollar":      {"$dps/registrations/PUT/iotdps-register/?$rid=a$b", ErrNoRID},
		"poll rid missing":     {"$dps/registrations/GET/iotdps-get-operationstatus/?operationId=x", ErrNoRID},
		"suffix after topic":   {"$dps/registrations/PUT/iotdps-register/x?$rid=1", ErrTopicNotAllowed},
		"prefix before topic":  {"x$dps/registrations/PUT/iotdps-register/?$rid=1", ErrTopicNotAllowed},
		"double slash":         {"$dps/registrations/PUT/iotdps-register//?$rid=1", ErrTopicNotAllowed},
		"question mark in rid": {"$dps/registrations/PUT/iotdps-register/?$rid", ErrNoRID},
	}
	testParser(t, "ParseTopic", ParseTopic, ok, bad)
}

func TestResponseTopic(t *testing.T) {
	tests := []struct {
		status, retry int
		rid, want     string
	}{
		{202, 3, "7", "$dps/registrations/res/202/?$rid=7&retry-after=3"},
		{200, 0, "8", "$dps/registrations/res/200/?$rid=8"},
		{401, 0, "1", "$dps/registrations/res/401/?$rid=1"},
		{429, 10, "9", "$dps/registrations/res/429/?$rid=9&retry-after=10"},
		{202, 0, "6f1e1c3a-4b6f-4c1b-9d1e-0c6f5a0f3b2a", "$dps/registrations/res/202/?$rid=6f1e1c3a-4b6f-4c1b-9d1e-0c6f5a0f3b2a"},
	}
	for _, tt := range tests {
		if got := ResponseTopic(tt.status, tt.rid, tt.retry); got != tt.want {
			t.Errorf("ResponseTopic(%d, %q, %d) = %q, want %q", tt.status, tt.rid, tt.retry, got, tt.want)
		}
	}
}

func FuzzParseUsername(f *testing.F) {
	for _, s := range []string{
		"0ne00111111/registrations/device-01/api-version=2019-03-31&ClientVersion=azure-iot-provisioning-device%2F1.9.1",
		"s/registrations/d/api-version=1", "s/registrations/d/", "a/b/c/d/e", "//registrations//", "%zz/registrations/%/api-version=%",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseUsername(s)
		if err != nil {
			return
		}
		// What is accepted has the grammar's parts, taken from the input.
		if u.IDScope == "" || u.RegistrationID == "" || u.APIVersion == "" ||
			strings.Contains(u.IDScope, "/") || strings.Contains(u.RegistrationID, "/") {
			t.Fatalf("ParseUsername(%q) = %+v", s, u)
		}
		if !strings.HasPrefix(s, u.IDScope+"/") || !strings.Contains(s, "/"+u.RegistrationID+"/") {
			t.Fatalf("ParseUsername(%q) = %+v: parts not from the input", s, u)
		}
	})
}

func FuzzParseTopic(f *testing.F) {
	for _, s := range []string{
		"$dps/registrations/PUT/iotdps-register/?$rid=1",
		"$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=5.a.b",
		"$dps/registrations/res/200/?$rid=1", "#", "$dps/registrations/PUT/iotdps-register/?&&=&$rid=%",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseTopic(s)
		if err != nil {
			return
		}
		if r.RID == "" || strings.ContainsAny(r.RID, "$&") || (r.Kind != Register && r.Kind != OperationStatus) {
			t.Fatalf("ParseTopic(%q) = %+v", s, r)
		}
		// The answer's topic keeps $rid first and verbatim, so every SDK's
		// parser finds it: C# regex, Python split on "$", Node regex.
		topic := ResponseTopic(200, r.RID, 3)
		if !strings.HasPrefix(topic, "$dps/registrations/res/200/?$rid="+r.RID+"&") {
			t.Fatalf("ResponseTopic for %q = %q", s, topic)
		}
		if utf8.ValidString(s) && len(strings.Split(topic, "$")) != 3 {
			t.Fatalf("ResponseTopic for %q = %q: Python's split on $ does not give 3 parts", s, topic)
		}
	})
}
