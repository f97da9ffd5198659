// Package hub tells the device registry behind a linked IoT hub what dpsd
// decided: it creates or updates the device's identity there and applies
// its initial twin, reads a device's twin before a move, and removes a
// device from a hub it leaves.
//
// Each linked hub has one Registry, chosen by its Kind:
//
//   - none: no calls (the hub learns nothing from dpsd).
//   - azure-iothub: the IoT Hub registry REST API, with a service token
//     signed with the key of the connection string's policy.
//   - webhook: a signed JSON event POSTed to an operator's URL, for brokers
//     and registries that are not IoT Hub (see docs/registry-webhook.md).
//
// # How the provisioning pipeline uses it
//
// The pipeline builds a Registry per linked hub with New (one shared
// outbound.Client for all of them), and, after choosing a hub and before
// the device hears "assigned":
//
//   - initial assignment, or a re-registration to the same hub: Apply with
//     the enrollment's (or the custom allocation webhook's) initial twin and
//     TwinMerge; on a re-registration to the same hub the twin is normally
//     left out (nil), so only the identity is refreshed.
//   - move with migration (deviceDataMigrated): Twin on the old hub's
//     Registry, then Apply on the new one with that twin and TwinReplace,
//     then Remove on the old one.
//   - move with reset (deviceDataReset): Apply on the new hub with the
//     initial twin and TwinReplace, then Remove on the old one.
//
// Apply is create-or-update: running it again after a failure, or for a
// device the hub already has, is safe. A failed call returns an *Error that
// names the hub, the operation and the hub's answer; the pipeline ends the
// registration "failed" with it (Unauthorized: the hub refused dpsd's
// credentials). Calls are retried with jittered backoff on 5xx, 429, network
// failures and timeouts, within the caller's context; 4xx answers are final.
//
// The azure-iothub registry is tested against hubtest.IoTHub, a local
// implementation of the documented IoT Hub registry API that checks what it
// receives, not against Azure itself.
package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/outbound"
)

// Registry is the device registry of one linked hub.
type Registry interface {
	// Apply creates or updates the device's identity, then applies the
	// twin as a.TwinMode says.
	Apply(ctx context.Context, a *Assignment) error
	// Twin returns the device's tags and desired properties. It returns
	// nil, nil when the device is absent, has neither, or the registry
	// cannot tell (none, webhook).
	Twin(ctx context.Context, deviceID string) (*dps.InitialTwin, error)
	// Remove deletes the device; a device that is not there is not an
	// error.
	Remove(ctx context.Context, r *Removal) error
}

// Assignment is what the registry is told about a device assigned to its
// hub.
type Assignment struct {
	RegistrationID string
	DeviceID       string
	// Attestation is the mechanism the device proved itself with
	// (dps.AttestationSymmetricKey, dps.AttestationX509, dps.AttestationTPM).
	Attestation string
	// Auth is how the device will authenticate to the hub.
	Auth    Authentication
	IotEdge bool
	// Twin is written as TwinMode says; see TwinMode.
	Twin     *dps.InitialTwin
	TwinMode TwinMode
	// Substatus is the registration's substatus (dps.Substatus...).
	Substatus string
	// Payload is the payload the device sent with its registration, if any.
	Payload json.RawMessage
	// PreviousHub is the hub the device leaves, on a move.
	PreviousHub string
}

// Removal is what the registry is told about a device that leaves its hub.
type Removal struct {
	RegistrationID string
	DeviceID       string
	// NewHub is the hub the device moves to, if any.
	NewHub string
}

// TwinMode says how Apply writes the twin.
type TwinMode int

const (
	// TwinMerge merges the twin into the device's twin (JSON merge
	// patch: a null value deletes a key); a nil twin writes nothing.
	TwinMerge TwinMode = iota
	// TwinReplace replaces the device's tags and desired properties; a
	// nil twin clears them.
	TwinReplace
)

func (m TwinMode) String() string {
	if m == TwinReplace {
		return "replace"
	}
	return "merge"
}

// Authentication types of a device identity, as IoT Hub names them.
const (
	AuthSAS                  = "sas"
	AuthSelfSigned           = "selfSigned"
	AuthCertificateAuthority = "certificateAuthority"
)

// Authentication is how a device authenticates to its hub, in IoT Hub's
// JSON shape:
//
//   - symmetric keys: sas, with the keys the device used with dpsd (the
//     enrollment's, or the keys derived from the group's); TPM: sas with
//     the key dpsd delivered to the device.
//   - X.509 individual enrollment: selfSigned, with the thumbprints of the
//     enrolled certificates (SHA-1 or SHA-256, hex; IoT Hub accepts both).
//   - X.509 enrollment group: certificateAuthority (the hub verifies the
//     chain against its own CA certificates).
type Authentication struct {
	Type           string          `json:"type"`
	SymmetricKey   *SymmetricKey   `json:"symmetricKey,omitempty"`
	X509Thumbprint *X509Thumbprint `json:"x509Thumbprint,omitempty"`
}

// SymmetricKey holds base64 keys.
type SymmetricKey struct {
	PrimaryKey   string `json:"primaryKey"`
	SecondaryKey string `json:"secondaryKey"`
}

// X509Thumbprint holds hex certificate thumbprints; Secondary may be empty.
type X509Thumbprint struct {
	PrimaryThumbprint   string `json:"primaryThumbprint"`
	SecondaryThumbprint string `json:"secondaryThumbprint,omitempty"`
}

// SASAuth is sas authentication with these base64 keys.
func SASAuth(primaryKey, secondaryKey string) Authentication {
	return Authentication{Type: AuthSAS, SymmetricKey: &SymmetricKey{primaryKey, secondaryKey}}
}

// SelfSignedAuth is selfSigned authentication with these thumbprints.
func SelfSignedAuth(primary, secondary string) Authentication {
	return Authentication{Type: AuthSelfSigned, X509Thumbprint: &X509Thumbprint{primary, secondary}}
}

// CAAuth is certificateAuthority authentication.
func CAAuth() Authentication { return Authentication{Type: AuthCertificateAuthority} }

func (a *Authentication) check() error {
	switch a.Type {
	case AuthSAS:
		if a.SymmetricKey == nil || a.SymmetricKey.PrimaryKey == "" {
			return errors.New("sas authentication needs a primary key")
		}
	case AuthSelfSigned:
		if a.X509Thumbprint == nil || a.X509Thumbprint.PrimaryThumbprint == "" {
			return errors.New("selfSigned authentication needs a primary thumbprint")
		}
	case AuthCertificateAuthority:
	default:
		return fmt.Errorf("authentication type %q is not sas, selfSigned or certificateAuthority", a.Type)
	}
	return nil
}

// secrets returns the keys of an authentication, to keep them out of errors.
func (a *Authentication) secrets() []string {
	if a.SymmetricKey == nil {
		return nil
	}
	return []string{a.SymmetricKey.PrimaryKey, a.SymmetricKey.SecondaryKey}
}

// Kind names a device registry.
type Kind string

// Device registry kinds.
const (
	KindNone        Kind = "none"
	KindAzureIoTHub Kind = "azure-iothub"
	KindWebhook     Kind = "webhook"
)

// Kinds lists the kinds with what each does, for CLI hints and docs.
var Kinds = []struct {
	Kind        Kind
	Description string
}{
	{KindNone, "dpsd assigns devices to the hub but calls nothing (the default)"},
	{KindAzureIoTHub, "dpsd creates each device in the IoT hub with the registry API of the hub's connection string, and applies its initial twin"},
	{KindWebhook, "dpsd POSTs each assignment, signed with HMAC-SHA256, to an operator's URL (docs/registry-webhook.md)"},
}

// ParseKind reads a kind; "" is none.
func ParseKind(s string) (Kind, error) {
	if s == "" {
		return KindNone, nil
	}
	for _, k := range Kinds {
		if strings.EqualFold(s, string(k.Kind)) {
			return k.Kind, nil
		}
	}
	return "", fmt.Errorf("device registry %q is not none, azure-iothub or webhook", s)
}

// Config configures the registry of one linked hub.
type Config struct {
	Kind Kind
	// Hub is the linked hub's name (its host name); errors name it.
	Hub string
	// ConnectionString is the hub's (azure-iothub): HostName, which may
	// carry a port, SharedAccessKeyName and SharedAccessKey of a policy with
	// registry write rights.
	ConnectionString string
	// WebhookURL and WebhookSecret (webhook): any https:// URL, or http://
	// to a loopback address; the secret keys the body's HMAC.
	WebhookURL    string
	WebhookSecret string
}

// MinWebhookSecretLength is the shortest webhook secret accepted.
const MinWebhookSecretLength = 16

// Validate checks a configuration as the service API receives it.
func (c Config) Validate() error {
	switch c.Kind {
	case KindNone, "":
		return nil
	case KindAzureIoTHub:
		_, err := parseConnectionString(c.ConnectionString)
		return err
	case KindWebhook:
		if _, err := outbound.CheckURL(c.WebhookURL); err != nil {
			return fmt.Errorf("registry webhook URL: %v", err)
		}
		if len(c.WebhookSecret) < MinWebhookSecretLength {
			return fmt.Errorf("registry webhook secret must be at least %d characters", MinWebhookSecretLength)
		}
		return nil
	}
	return fmt.Errorf("device registry %q is not none, azure-iothub or webhook", c.Kind)
}

// Options are what every registry shares.
type Options struct {
	// Client makes the calls; required for azure-iothub and webhook.
	Client *outbound.Client
	// Retry bounds retries; zero fields take the defaults.
	Retry Retry
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// New returns the registry a configuration describes.
func New(c Config, o Options) (Registry, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.Kind == KindNone || c.Kind == "" {
		return None{}, nil
	}
	if o.Client == nil {
		return nil, errors.New("hub: no outbound client")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	o.Retry = o.Retry.withDefaults()
	if c.Kind == KindAzureIoTHub {
		return newIoTHub(c, o)
	}
	return newWebhook(c, o), nil
}

// None is the registry that calls nothing.
type None struct{}

// Apply does nothing.
func (None) Apply(context.Context, *Assignment) error { return nil }

// Twin knows nothing.
func (None) Twin(context.Context, string) (*dps.InitialTwin, error) { return nil, nil }

// Remove does nothing.
func (None) Remove(context.Context, *Removal) error { return nil }

var (
	_ Registry = None{}
	_ Registry = (*IoTHub)(nil)
	_ Registry = (*Webhook)(nil)
)
