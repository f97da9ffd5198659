package dps

// The management plane of Azure DPS (CA certificates, linked hubs, access
// policies, the default allocation policy) lives in Azure Resource Manager.
// dpsd serves it on its service API in the same shapes, so tools written
// against the ARM models read it unchanged.

import (
	"errors"
	"strings"
)

// CertificateTypeARM is the resource type Azure gives DPS CA certificates.
const CertificateTypeARM = "Microsoft.Devices/ProvisioningServices/Certificates"

// CertificateResponse describes an uploaded CA certificate.
type CertificateResponse struct {
	ID         string                `json:"id"`
	Name       string                `json:"name"`
	Type       string                `json:"type"`
	Etag       string                `json:"etag"`
	Properties CertificateProperties `json:"properties"`
}

// CertificateProperties of a CA certificate. Dates are RFC 1123, as in ARM.
type CertificateProperties struct {
	Subject          string `json:"subject"`
	Expiry           string `json:"expiry"`
	Thumbprint       string `json:"thumbprint"`
	SHA256Thumbprint string `json:"sha256Thumbprint"`
	IsVerified       bool   `json:"isVerified"`
	Certificate      string `json:"certificate"`
	Created          string `json:"created"`
	Updated          string `json:"updated"`
	VerificationCode string `json:"verificationCode,omitempty"`
}

// CertificateListDescription is the body of a certificate list.
type CertificateListDescription struct {
	Value []CertificateResponse `json:"value"`
}

// CertificateBody uploads a CA certificate. ARM nests it in "properties";
// the flat form is accepted too.
type CertificateBody struct {
	Certificate string                 `json:"certificate,omitempty"`
	IsVerified  *bool                  `json:"isVerified,omitempty"`
	Properties  *CertificateBodyInline `json:"properties,omitempty"`
}

// CertificateBodyInline is the nested form of CertificateBody.
type CertificateBodyInline struct {
	Certificate string `json:"certificate,omitempty"`
	IsVerified  *bool  `json:"isVerified,omitempty"`
}

// VerificationCodeRequest proves possession of a CA's private key.
type VerificationCodeRequest struct {
	Certificate string `json:"certificate"`
}

// LinkedHub is an IoT hub devices can be assigned to.
type LinkedHub struct {
	Name                  string `json:"name"`
	ConnectionString      string `json:"connectionString,omitempty"`
	Location              string `json:"location,omitempty"`
	AllocationWeight      int    `json:"allocationWeight"`
	ApplyAllocationPolicy bool   `json:"applyAllocationPolicy"`
	// DeviceRegistry is where dpsd creates the devices it assigns to the
	// hub: none, azure-iothub or webhook (dpsd's own member).
	DeviceRegistry string `json:"deviceRegistry"`
	// RegistryWebhookURL (its query masked) and RegistryWebhookSecret
	// (always masked) configure the webhook registry.
	RegistryWebhookURL    string `json:"registryWebhookUrl,omitempty"`
	RegistryWebhookSecret string `json:"registryWebhookSecret,omitempty"`
	Etag                  string `json:"etag,omitempty"`
}

// LinkedHubBody creates or updates a linked hub; absent fields keep their
// value (or take the default on create).
type LinkedHubBody struct {
	Name                  string `json:"name,omitempty"`
	ConnectionString      string `json:"connectionString,omitempty"`
	Location              string `json:"location,omitempty"`
	AllocationWeight      *int   `json:"allocationWeight,omitempty"`
	ApplyAllocationPolicy *bool  `json:"applyAllocationPolicy,omitempty"`
	DeviceRegistry        string `json:"deviceRegistry,omitempty"`
	// RegistryWebhookURL and RegistryWebhookSecret may be sent back as read
	// (masked): they then keep their stored values.
	RegistryWebhookURL    string `json:"registryWebhookUrl,omitempty"`
	RegistryWebhookSecret string `json:"registryWebhookSecret,omitempty"`
}

// LinkedHubList is the body of a linked hub list.
type LinkedHubList struct {
	Value []LinkedHub `json:"value"`
}

// Access rights of a shared access policy.
const (
	RightServiceConfig           = "ServiceConfig"
	RightEnrollmentRead          = "EnrollmentRead"
	RightEnrollmentWrite         = "EnrollmentWrite"
	RightRegistrationStatusRead  = "RegistrationStatusRead"
	RightRegistrationStatusWrite = "RegistrationStatusWrite"
)

// AllRights lists every right, in the order ARM prints them.
var AllRights = []string{RightServiceConfig, RightEnrollmentRead, RightEnrollmentWrite, RightRegistrationStatusRead, RightRegistrationStatusWrite}

// ParseRights reads a comma- or space-separated list of rights, matching
// names case-insensitively and returning each once, in its canonical
// spelling.
func ParseRights(s string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		canon := ""
		for _, r := range AllRights {
			if strings.EqualFold(f, r) {
				canon = r
			}
		}
		if canon == "" {
			return nil, errors.New("unknown right " + f + "; rights are " + strings.Join(AllRights, ", "))
		}
		if !seen[canon] {
			seen[canon] = true
			out = append(out, canon)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("a policy needs at least one right: " + strings.Join(AllRights, ", "))
	}
	return out, nil
}

// OwnerPolicyName is the policy every instance starts with.
const OwnerPolicyName = "provisioningserviceowner"

// AccessPolicy is a shared access policy (ARM SharedAccessSignatureAuthorizationRule).
// Rights is a comma-separated list, as in ARM.
type AccessPolicy struct {
	KeyName      string `json:"keyName"`
	PrimaryKey   string `json:"primaryKey,omitempty"`
	SecondaryKey string `json:"secondaryKey,omitempty"`
	Rights       string `json:"rights"`
	Etag         string `json:"etag,omitempty"`
}

// AccessPolicyList is the body of a policy list.
type AccessPolicyList struct {
	Value []AccessPolicy `json:"value"`
}

// Settings are the instance-wide settings.
type Settings struct {
	IDScope          string `json:"idScope"`
	AllocationPolicy string `json:"allocationPolicy"`
	// DeviceProvisioningHostName is the host:port devices dial.
	DeviceProvisioningHostName string `json:"deviceProvisioningHostName,omitempty"`
	ServiceOperationsHostName  string `json:"serviceOperationsHostName,omitempty"`
}
