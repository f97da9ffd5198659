package sas

import (
	"errors"
	"fmt"
	"strings"

	"github.com/dpsd/dpsd/internal/dps"
)

// ConnectionString is an Azure-style connection string:
// HostName=...;SharedAccessKeyName=...;SharedAccessKey=...
type ConnectionString struct {
	HostName            string
	SharedAccessKeyName string
	SharedAccessKey     string
	DeviceID            string
}

// ParseConnectionString splits s on ';' and each part on its first '='. Keys
// are matched case-insensitively; unknown keys are ignored.
func ParseConnectionString(s string) (*ConnectionString, error) {
	var c ConnectionString
	for _, part := range strings.Split(strings.TrimSpace(s), ";") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("connection string part %q has no '='", dps.Truncate(part))
		}
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "hostname":
			c.HostName = strings.TrimSpace(v)
		case "sharedaccesskeyname":
			c.SharedAccessKeyName = strings.TrimSpace(v)
		case "sharedaccesskey":
			c.SharedAccessKey = strings.TrimSpace(v)
		case "deviceid":
			c.DeviceID = strings.TrimSpace(v)
		}
	}
	if c.HostName == "" {
		return nil, errors.New("connection string has no HostName")
	}
	if c.SharedAccessKey != "" {
		if _, err := DecodeKey(c.SharedAccessKey); err != nil {
			return nil, errors.New("connection string SharedAccessKey is not base64")
		}
	}
	return &c, nil
}

// String renders the connection string.
func (c *ConnectionString) String() string {
	s := "HostName=" + c.HostName
	if c.DeviceID != "" {
		s += ";DeviceId=" + c.DeviceID
	}
	if c.SharedAccessKeyName != "" {
		s += ";SharedAccessKeyName=" + c.SharedAccessKeyName
	}
	if c.SharedAccessKey != "" {
		s += ";SharedAccessKey=" + c.SharedAccessKey
	}
	return s
}

// Masked renders the connection string with the key hidden.
func (c *ConnectionString) Masked() string {
	m := *c
	if m.SharedAccessKey != "" {
		m.SharedAccessKey = "****"
	}
	return m.String()
}
