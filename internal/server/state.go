package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// State is what a running server tells local tools (dpsd info, the
// management commands without --login) through DataDir/server.json: where it
// listens and which CA file to trust. It holds no secret.
type State struct {
	IDScope         string `json:"idScope"`
	DeviceEndpoint  string `json:"deviceEndpoint"`
	ServiceEndpoint string `json:"serviceEndpoint"`
	MQTTEndpoint    string `json:"mqttEndpoint,omitempty"`
	// MetricsEndpoint is the --metrics-addr listener as it listens (plain
	// HTTP; not advertised to clients).
	MetricsEndpoint string    `json:"metricsEndpoint,omitempty"`
	ServerCAFile    string    `json:"serverCAFile,omitempty"`
	PID             int       `json:"pid"`
	StartedAt       time.Time `json:"startedAt"`
}

// WriteState replaces DataDir/server.json atomically.
func WriteState(dir string, st *State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, StateFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, StateFile))
}

// ReadState reads DataDir/server.json; os.ErrNotExist if no server ever ran there.
func ReadState(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	if err != nil {
		return nil, err
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, StateFile), err)
	}
	if st.ServiceEndpoint == "" {
		return nil, errors.New(filepath.Join(dir, StateFile) + " has no serviceEndpoint")
	}
	return &st, nil
}
