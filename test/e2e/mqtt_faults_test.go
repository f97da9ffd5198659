package e2e_test

import (
	"strings"
	"testing"
)

// TestMQTTNodeSDKRetriesInjectedFaults: firmware retry paths against
// injected faults. The official Node SDK over MQTT is answered 429 on its
// first register and 503 on its first poll (strict mode, so that it polls);
// it waits the retry-after, retries, and every device ends assigned.
func TestMQTTNodeSDKRetriesInjectedFaults(t *testing.T) {
	t.Parallel()
	s, endpoint := startMQTTServer(t, false, "--azure-strict", "--retry-after", "1",
		"--fault", "429,on=register,count=1,retry-after=1", "--fault", "503,on=poll,count=1,retry-after=1")
	good, _ := enrollMQTTDevices(t, s)
	got := mqttRunNode(t, s, endpoint, mqttWithTransport(good, "mqtt"))
	mqttCheckNode(t, got, good, nil)
	logs := s.Logs()
	for _, want := range []string{
		"FAULT INJECTION IS ON",
		`msg="fault injected" rule="--fault #1" fault="429,on=register,retry-after=1,count=1" operation=register transport=mqtt`,
		`msg="fault injected" rule="--fault #2" fault="503,on=poll,retry-after=1,count=1" operation=poll transport=mqtt`,
		"status=429 errorCode=429001",
		"status=503 errorCode=503001",
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log has no %q", want)
		}
	}
}
