package dps

import (
	"bytes"
	"encoding/json"
)

// Attestation types. Input is matched case-insensitively and stored in this
// canonical spelling.
const (
	AttestationNone         = "none"
	AttestationTPM          = "tpm"
	AttestationX509         = "x509"
	AttestationSymmetricKey = "symmetricKey"
)

// Provisioning statuses of an enrollment.
const (
	ProvisioningEnabled  = "enabled"
	ProvisioningDisabled = "disabled"
)

// Allocation policies.
const (
	AllocationHashed     = "hashed"
	AllocationGeoLatency = "geoLatency"
	AllocationStatic     = "static"
	AllocationCustom     = "custom"
)

// Registration statuses (closed, case-sensitive on the wire).
const (
	StatusUnassigned = "unassigned"
	StatusAssigning  = "assigning"
	StatusAssigned   = "assigned"
	StatusFailed     = "failed"
	StatusDisabled   = "disabled"
)

// Substatuses of an assigned registration.
const (
	SubstatusInitialAssignment                = "initialAssignment"
	SubstatusDeviceDataMigrated               = "deviceDataMigrated"
	SubstatusDeviceDataReset                  = "deviceDataReset"
	SubstatusReprovisionedToInitialAssignment = "reprovisionedToInitialAssignment"
)

// Enrollment is an individual enrollment or an enrollment group: what the
// code that treats both alike needs of either.
type Enrollment interface {
	// ID is the registration ID or the enrollment group ID.
	ID() string
	SetID(id string)
	// Settings is the part both kinds share.
	Settings() *EnrollmentSettings
}

// EnrollmentPtr is the constraint of code generic over both kinds: P is
// *IndividualEnrollment or *EnrollmentGroup, and T what it points to, so that
// the code can make new ones (P(new(T))) and copy them (*p).
type EnrollmentPtr[T any] interface {
	*T
	Enrollment
}

// EnrollmentSettings are the members individual enrollments and enrollment
// groups share: how devices attest, where and how they are provisioned, and
// the record's etag and timestamps. Both models embed it, so a member added
// here is a member of both, on the wire and in every rule that reads it.
type EnrollmentSettings struct {
	Attestation                *AttestationMechanism       `json:"attestation"`
	Capabilities               *DeviceCapabilities         `json:"capabilities,omitempty"`
	IotHubHostName             string                      `json:"iotHubHostName,omitempty"`
	InitialTwin                *InitialTwin                `json:"initialTwin,omitempty"`
	Etag                       string                      `json:"etag,omitempty"`
	ProvisioningStatus         string                      `json:"provisioningStatus,omitempty"`
	ReprovisionPolicy          *ReprovisionPolicy          `json:"reprovisionPolicy,omitempty"`
	CreatedDateTimeUtc         *Time                       `json:"createdDateTimeUtc,omitempty"`
	LastUpdatedDateTimeUtc     *Time                       `json:"lastUpdatedDateTimeUtc,omitempty"`
	AllocationPolicy           string                      `json:"allocationPolicy,omitempty"`
	IotHubs                    []string                    `json:"iotHubs,omitempty"`
	CustomAllocationDefinition *CustomAllocationDefinition `json:"customAllocationDefinition,omitempty"`
	// CredentialPolicyName (2025-07-01-preview) and
	// ClientCertificateIssuancePolicy (2021-11-01-preview) name the issuing
	// CA that signs the certificates its devices request; dpsd keeps both
	// equal (see enrollment.PrepareIssuance).
	CredentialPolicyName            string                           `json:"credentialPolicyName,omitempty"`
	ClientCertificateIssuancePolicy *ClientCertificateIssuancePolicy `json:"clientCertificateIssuancePolicy,omitempty"`
}

// ClientCertificateIssuancePolicy is the 2021-11-01-preview form of an
// enrollment's issuing CA.
type ClientCertificateIssuancePolicy struct {
	CertificateAuthorityName string `json:"certificateAuthorityName"`
}

// IssuingCA is the name of the issuing CA the settings name, or "".
func (s *EnrollmentSettings) IssuingCA() string {
	if s.CredentialPolicyName != "" {
		return s.CredentialPolicyName
	}
	if p := s.ClientCertificateIssuancePolicy; p != nil {
		return p.CertificateAuthorityName
	}
	return ""
}

// IndividualEnrollment is the service API model of one device's enrollment.
// On the wire, optionalDeviceInformation stands among the settings, after
// reprovisionPolicy (see MarshalJSON).
type IndividualEnrollment struct {
	RegistrationID    string                   `json:"registrationId"`
	DeviceID          string                   `json:"deviceId,omitempty"`
	RegistrationState *DeviceRegistrationState `json:"registrationState,omitempty"`
	EnrollmentSettings
	OptionalDeviceInformation json.RawMessage `json:"optionalDeviceInformation,omitempty"`
}

// EnrollmentGroup is the service API model of a group of devices that share
// an attestation root (a signing certificate, a CA, or a group key).
type EnrollmentGroup struct {
	EnrollmentGroupID string `json:"enrollmentGroupId"`
	EnrollmentSettings
}

// AttestationMechanism says how a device proves its identity.
type AttestationMechanism struct {
	Type         string                   `json:"type"`
	TPM          *TPMAttestation          `json:"tpm,omitempty"`
	X509         *X509Attestation         `json:"x509,omitempty"`
	SymmetricKey *SymmetricKeyAttestation `json:"symmetricKey,omitempty"`
}

// TPMAttestation holds the public endorsement key (and optionally the storage
// root key) of a device's TPM, base64 encoded.
type TPMAttestation struct {
	EndorsementKey string `json:"endorsementKey,omitempty"`
	StorageRootKey string `json:"storageRootKey,omitempty"`
}

// SymmetricKeyAttestation holds base64 keys; for a group they are the group
// keys from which device keys are derived.
type SymmetricKeyAttestation struct {
	PrimaryKey   string `json:"primaryKey,omitempty"`
	SecondaryKey string `json:"secondaryKey,omitempty"`
}

// X509Attestation: clientCertificates for an individual enrollment,
// signingCertificates or caReferences for a group.
type X509Attestation struct {
	ClientCertificates  *X509Certificates `json:"clientCertificates,omitempty"`
	SigningCertificates *X509Certificates `json:"signingCertificates,omitempty"`
	CAReferences        *X509CAReferences `json:"caReferences,omitempty"`
}

// X509Certificates is a primary and an optional secondary certificate.
type X509Certificates struct {
	Primary   *X509CertificateWithInfo `json:"primary,omitempty"`
	Secondary *X509CertificateWithInfo `json:"secondary,omitempty"`
}

// X509CertificateWithInfo carries a certificate on input (PEM, base64 DER or
// base64 PEM) and the server's description of it on output.
type X509CertificateWithInfo struct {
	Certificate string               `json:"certificate,omitempty"`
	Info        *X509CertificateInfo `json:"info,omitempty"`
}

// X509CertificateInfo describes a certificate. Thumbprints and serial number
// are upper-case hex without separators.
type X509CertificateInfo struct {
	SubjectName      string `json:"subjectName"`
	SHA1Thumbprint   string `json:"sha1Thumbprint"`
	SHA256Thumbprint string `json:"sha256Thumbprint"`
	IssuerName       string `json:"issuerName"`
	NotBeforeUtc     *Time  `json:"notBeforeUtc"`
	NotAfterUtc      *Time  `json:"notAfterUtc"`
	SerialNumber     string `json:"serialNumber"`
	Version          int    `json:"version"`
}

// X509CAReferences names CA certificates uploaded to the instance.
type X509CAReferences struct {
	Primary   string `json:"primary,omitempty"`
	Secondary string `json:"secondary,omitempty"`
}

// DeviceCapabilities of the device created in the hub.
type DeviceCapabilities struct {
	IotEdge bool `json:"iotEdge"`
}

// InitialTwin is written to the device twin at assignment. Tags and desired
// properties are arbitrary JSON objects kept verbatim.
type InitialTwin struct {
	Tags       json.RawMessage        `json:"tags,omitempty"`
	Properties *InitialTwinProperties `json:"properties,omitempty"`
}

// Clone returns a copy of t sharing no memory with it (nil for nil), for
// stores that hand out or keep records their callers may change.
func (t *InitialTwin) Clone() *InitialTwin {
	if t == nil {
		return nil
	}
	c := &InitialTwin{Tags: bytes.Clone(t.Tags)}
	if t.Properties != nil {
		c.Properties = &InitialTwinProperties{Desired: bytes.Clone(t.Properties.Desired)}
	}
	return c
}

// InitialTwinProperties holds the desired properties of an initial twin.
type InitialTwinProperties struct {
	Desired json.RawMessage `json:"desired,omitempty"`
}

// ReprovisionPolicy says what happens when a registered device registers again.
type ReprovisionPolicy struct {
	UpdateHubAssignment bool `json:"updateHubAssignment"`
	MigrateDeviceData   bool `json:"migrateDeviceData"`
}

// DefaultReprovisionPolicy is the policy of an enrollment that has none:
// re-provision, and migrate the device's data to its new hub.
var DefaultReprovisionPolicy = ReprovisionPolicy{UpdateHubAssignment: true, MigrateDeviceData: true}

// ReprovisionPolicies are the reprovision policies by the names the Azure
// CLI gives them.
var ReprovisionPolicies = map[string]ReprovisionPolicy{
	"reprovisionandmigratedata": DefaultReprovisionPolicy,
	"reprovisionandresetdata":   {UpdateHubAssignment: true, MigrateDeviceData: false},
	"never":                     {UpdateHubAssignment: false, MigrateDeviceData: false},
}

// ReprovisionPolicyName is the name of p in ReprovisionPolicies; nil is
// the default's.
func ReprovisionPolicyName(p *ReprovisionPolicy) string {
	switch {
	case p == nil || p.UpdateHubAssignment && p.MigrateDeviceData:
		return "reprovisionandmigratedata"
	case !p.UpdateHubAssignment:
		return "never"
	}
	return "reprovisionandresetdata"
}

// CustomAllocationDefinition points at an allocation webhook.
type CustomAllocationDefinition struct {
	WebhookURL string `json:"webhookUrl"`
	APIVersion string `json:"apiVersion"`
}

// DeviceRegistrationState is the service API view of a registration record.
type DeviceRegistrationState struct {
	RegistrationID         string          `json:"registrationId"`
	CreatedDateTimeUtc     *Time           `json:"createdDateTimeUtc,omitempty"`
	AssignedHub            string          `json:"assignedHub,omitempty"`
	DeviceID               string          `json:"deviceId,omitempty"`
	Status                 string          `json:"status,omitempty"`
	Substatus              string          `json:"substatus,omitempty"`
	ErrorCode              int             `json:"errorCode,omitempty"`
	ErrorMessage           string          `json:"errorMessage,omitempty"`
	LastUpdatedDateTimeUtc *Time           `json:"lastUpdatedDateTimeUtc,omitempty"`
	Etag                   string          `json:"etag,omitempty"`
	Payload                json.RawMessage `json:"payload,omitempty"`
	// AppliedTwin is the twin dpsd wrote to the device's hub (dpsd's own
	// member; absent when none).
	AppliedTwin *InitialTwin `json:"appliedTwin,omitempty"`
}

// DeviceRegistrationResult is the device API view of a registration record
// (registrationState in an operation status, and the status lookup body).
type DeviceRegistrationResult struct {
	X509                   *X509RegistrationResult         `json:"x509,omitempty"`
	SymmetricKey           *SymmetricKeyRegistrationResult `json:"symmetricKey,omitempty"`
	TPM                    *TPMRegistrationResult          `json:"tpm,omitempty"`
	RegistrationID         string                          `json:"registrationId"`
	CreatedDateTimeUtc     *Time                           `json:"createdDateTimeUtc,omitempty"`
	AssignedHub            string                          `json:"assignedHub,omitempty"`
	DeviceID               string                          `json:"deviceId,omitempty"`
	Status                 string                          `json:"status"`
	Substatus              string                          `json:"substatus,omitempty"`
	ErrorCode              int                             `json:"errorCode,omitempty"`
	ErrorMessage           string                          `json:"errorMessage,omitempty"`
	LastUpdatedDateTimeUtc *Time                           `json:"lastUpdatedDateTimeUtc,omitempty"`
	Etag                   string                          `json:"etag,omitempty"`
	Payload                json.RawMessage                 `json:"payload,omitempty"`
	// IssuedCertificateChain answers a csr: base64 DER certificates, the
	// device's first, each issued by the next, up to the root.
	IssuedCertificateChain []string `json:"issuedCertificateChain,omitempty"`
	// IssuedClientCertificate answers a clientCertificateCsr
	// (2021-11-01-preview): the device's certificate and the CAs above it,
	// as PEM.
	IssuedClientCertificate string `json:"issuedClientCertificate,omitempty"`
}

// WithoutIssued returns the record without the certificates it delivered:
// the status lookup never returns them.
func (r *DeviceRegistrationResult) WithoutIssued() *DeviceRegistrationResult {
	if r == nil || len(r.IssuedCertificateChain) == 0 && r.IssuedClientCertificate == "" {
		return r
	}
	c := *r
	c.IssuedCertificateChain, c.IssuedClientCertificate = nil, ""
	return &c
}

// State returns the service API view of the record.
func (r *DeviceRegistrationResult) State() *DeviceRegistrationState {
	return &DeviceRegistrationState{
		RegistrationID:         r.RegistrationID,
		CreatedDateTimeUtc:     r.CreatedDateTimeUtc,
		AssignedHub:            r.AssignedHub,
		DeviceID:               r.DeviceID,
		Status:                 r.Status,
		Substatus:              r.Substatus,
		ErrorCode:              r.ErrorCode,
		ErrorMessage:           r.ErrorMessage,
		LastUpdatedDateTimeUtc: r.LastUpdatedDateTimeUtc,
		Etag:                   r.Etag,
		Payload:                r.Payload,
	}
}

// X509RegistrationResult says which certificate and group authenticated an
// X.509 device.
type X509RegistrationResult struct {
	CertificateInfo        *X509CertificateInfo `json:"certificateInfo,omitempty"`
	EnrollmentGroupID      string               `json:"enrollmentGroupId,omitempty"`
	SigningCertificateInfo *X509CertificateInfo `json:"signingCertificateInfo,omitempty"`
}

// SymmetricKeyRegistrationResult names the group of a group-derived key.
type SymmetricKeyRegistrationResult struct {
	EnrollmentGroupID string `json:"enrollmentGroupId,omitempty"`
}

// TPMRegistrationResult carries the activation blob for the hub key.
type TPMRegistrationResult struct {
	AuthenticationKey string `json:"authenticationKey,omitempty"`
}

// DeviceRegistration is the body a device sends to register.
type DeviceRegistration struct {
	RegistrationID string          `json:"registrationId,omitempty"`
	TPM            *TPMAttestation `json:"tpm,omitempty"`
	Payload        json.RawMessage `json:"payload,omitempty"`
	// CSR asks for a certificate (2025-07-01-preview): base64 of a DER
	// PKCS#10 request whose subject CN is the registration ID.
	CSR string `json:"csr,omitempty"`
	// ClientCertificateCSR is the same in the 2021-11-01-preview contract.
	ClientCertificateCSR string `json:"clientCertificateCsr,omitempty"`
}

// RegistrationOperationStatus answers a register request or an operation poll.
type RegistrationOperationStatus struct {
	OperationID       string                    `json:"operationId"`
	Status            string                    `json:"status"`
	RegistrationState *DeviceRegistrationResult `json:"registrationState,omitempty"`
}

// ErrorDetails is the error body of both APIs (ProvisioningServiceErrorDetails).
type ErrorDetails struct {
	ErrorCode    int               `json:"errorCode"`
	TrackingID   string            `json:"trackingId"`
	Message      string            `json:"message"`
	TimestampUtc *Time             `json:"timestampUtc"`
	Info         map[string]string `json:"info,omitempty"`
}

// Bulk operation modes.
const (
	BulkCreate            = "create"
	BulkUpdate            = "update"
	BulkUpdateIfMatchETag = "updateIfMatchETag"
	BulkDelete            = "delete"
)

// BulkEnrollmentOperation is the body of POST /enrollments.
type BulkEnrollmentOperation struct {
	Enrollments []json.RawMessage `json:"enrollments"`
	Mode        string            `json:"mode"`
}

// BulkEnrollmentGroupOperation is the body of POST /enrollmentGroups.
type BulkEnrollmentGroupOperation struct {
	EnrollmentGroups []json.RawMessage `json:"enrollmentGroups"`
	Mode             string            `json:"mode"`
}

// BulkEnrollmentOperationResult reports per-item failures of a bulk operation.
type BulkEnrollmentOperationResult struct {
	IsSuccessful bool                           `json:"isSuccessful"`
	Errors       []BulkEnrollmentOperationError `json:"errors"`
}

// BulkEnrollmentOperationError is one failed item of a bulk operation.
type BulkEnrollmentOperationError struct {
	RegistrationID    string `json:"registrationId,omitempty"`
	EnrollmentGroupID string `json:"enrollmentGroupId,omitempty"`
	ErrorCode         int    `json:"errorCode"`
	ErrorStatus       string `json:"errorStatus"`
}

// QuerySpecification is the body of the query operations; dpsd supports
// SELECT * only, which is all Azure's SDKs send.
type QuerySpecification struct {
	Query string `json:"query"`
}
