// Package store defines what dpsd keeps and how callers reach it: one Store
// interface named after use cases, its records, and its sentinel errors.
// Implementations live in sub-packages (sqlstore: SQLite, PostgreSQL) and all
// pass the contract suite in storetest.
//
// Identifiers (registration IDs, enrollment group IDs, CA names, hub names,
// policy names) are case-insensitive: a store keys records by the lower-cased
// ID and returns the spelling last written.
//
// Writes take an ifMatch precondition taken from an If-Match header:
//
//	""       create only: ErrConflict if the record exists
//	"*"      create or overwrite
//	etag     overwrite only if the stored etag equals it, else ErrPreconditionFailed
//	         (also when the record does not exist)
//
// Deletes take ifMatch too, where "" and "*" mean unconditional. Etags are
// compared after stripping surrounding double quotes. Every successful write
// assigns a new etag and sets the timestamps (created is kept on overwrite).
package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
)

// Sentinel errors; implementations wrap them with context.
var (
	ErrNotFound           = errors.New("not found")
	ErrConflict           = errors.New("already exists")
	ErrPreconditionFailed = errors.New("etag does not match")
	// ErrUnavailable wraps failures to reach the database (as opposed to
	// errors in the request), so callers can answer 503. Implementations
	// retry transient failures (a lost connection, a deadlock) a bounded
	// number of times before returning it.
	ErrUnavailable = errors.New("store unavailable")
	// ErrBadPosition is the error of a paging position (Page.Next) the
	// store did not return.
	ErrBadPosition = errors.New("not a paging position this store returned")
)

// Store is everything dpsd persists. Several processes may share one
// database (dpsd nodes on PostgreSQL): a Store keeps no state of its own,
// so every call sees what any of them committed, and the ifMatch
// preconditions hold across them.
type Store interface {
	// Instance returns the instance, or ErrNotFound before InitInstance.
	Instance(ctx context.Context) (*Instance, error)
	// InitInstance stores inst if no instance exists yet and returns the
	// stored one, so that concurrent first starts agree on one instance.
	InitInstance(ctx context.Context, inst *Instance) (*Instance, error)
	// UpdateInstance replaces the instance's mutable fields (settings, server
	// certificate) and sets the TPM challenge secret if none is stored; the
	// ID scope, the CA and a stored TPM challenge secret never change.
	UpdateInstance(ctx context.Context, inst *Instance) error

	Policy(ctx context.Context, name string) (*Policy, error)
	Policies(ctx context.Context) ([]*Policy, error)
	PutPolicy(ctx context.Context, p *Policy, ifMatch string) (*Policy, error)
	DeletePolicy(ctx context.Context, name, ifMatch string) error

	// Enrollment returns the individual enrollment of a registration ID.
	Enrollment(ctx context.Context, registrationID string) (*dps.IndividualEnrollment, error)
	// PutEnrollment writes e (which the caller has validated, with
	// certificate info filled) and returns it as stored: new etag, timestamps.
	PutEnrollment(ctx context.Context, e *dps.IndividualEnrollment, ifMatch string) (*dps.IndividualEnrollment, error)
	DeleteEnrollment(ctx context.Context, registrationID, ifMatch string) error
	// Enrollments returns up to limit enrollments whose key sorts after
	// `after` (a key returned as Page.Next), in key order.
	Enrollments(ctx context.Context, after string, limit int) (Page[*dps.IndividualEnrollment], error)

	Group(ctx context.Context, groupID string) (*dps.EnrollmentGroup, error)
	PutGroup(ctx context.Context, g *dps.EnrollmentGroup, ifMatch string) (*dps.EnrollmentGroup, error)
	DeleteGroup(ctx context.Context, groupID, ifMatch string) error
	Groups(ctx context.Context, after string, limit int) (Page[*dps.EnrollmentGroup], error)
	// GroupsBySigningCert returns the groups whose signingCertificates
	// primary or secondary has this SHA-256 thumbprint (upper-case hex).
	GroupsBySigningCert(ctx context.Context, sha256Thumbprint string) ([]*dps.EnrollmentGroup, error)
	// GroupsByCA returns the groups whose caReferences name this CA.
	GroupsByCA(ctx context.Context, caName string) ([]*dps.EnrollmentGroup, error)
	// SigningCertsBySubject returns the signing certificates (DER) of groups
	// whose subject equals subject (the raw DER subject of a certificate), so
	// a chain that stops below a group's certificate can be completed.
	SigningCertsBySubject(ctx context.Context, subject []byte) ([][]byte, error)
	// SymmetricKeyGroups returns every group with symmetric-key attestation.
	SymmetricKeyGroups(ctx context.Context) ([]*dps.EnrollmentGroup, error)

	CACertificate(ctx context.Context, name string) (*CACertificate, error)
	CACertificates(ctx context.Context) ([]*CACertificate, error)
	PutCACertificate(ctx context.Context, c *CACertificate, ifMatch string) (*CACertificate, error)
	DeleteCACertificate(ctx context.Context, name, ifMatch string) error
	// CACertificatesByThumbprint returns the CAs with this SHA-256 thumbprint.
	CACertificatesByThumbprint(ctx context.Context, sha256Thumbprint string) ([]*CACertificate, error)
	// CACertificatesBySubject returns the CAs whose raw DER subject is subject.
	CACertificatesBySubject(ctx context.Context, subject []byte) ([]*CACertificate, error)

	// Issuing CAs are the instance's own certificate authorities: they sign
	// the certificates devices request with a CSR when they register.
	IssuingCA(ctx context.Context, name string) (*IssuingCA, error)
	IssuingCAs(ctx context.Context) ([]*IssuingCA, error)
	PutIssuingCA(ctx context.Context, c *IssuingCA, ifMatch string) (*IssuingCA, error)
	// DeleteIssuingCA deletes an issuing CA; the records of the
	// certificates it issued are kept.
	DeleteIssuingCA(ctx context.Context, name, ifMatch string) error

	// IssuedCertificate returns the record of an issued certificate by its
	// serial number (hex, any case).
	IssuedCertificate(ctx context.Context, serialNumber string) (*IssuedCertificate, error)
	// IssuedCertificateByThumbprint returns the record of the issued
	// certificate with this SHA-256 thumbprint (upper-case hex).
	IssuedCertificateByThumbprint(ctx context.Context, sha256Thumbprint string) (*IssuedCertificate, error)
	// IssuedCertificates pages through the issued certificates f selects,
	// in serial number order.
	IssuedCertificates(ctx context.Context, f IssuedFilter, after string, limit int) (Page[*IssuedCertificate], error)
	// RevokeIssuedCertificates revokes the certificate r names by serial
	// number (ErrNotFound when there is none), or every certificate issued
	// for r's registration ID, and returns them as stored. A certificate
	// revoked before keeps its first revocation time and reason.
	RevokeIssuedCertificates(ctx context.Context, r Revocation) ([]*IssuedCertificate, error)
	// RevokedCertificates returns the revoked certificates of an issuing
	// CA, in serial number order: what its CRL lists.
	RevokedCertificates(ctx context.Context, issuingCA string) ([]*IssuedCertificate, error)

	LinkedHub(ctx context.Context, name string) (*LinkedHub, error)
	LinkedHubs(ctx context.Context) ([]*LinkedHub, error)
	PutLinkedHub(ctx context.Context, h *LinkedHub, ifMatch string) (*LinkedHub, error)
	DeleteLinkedHub(ctx context.Context, name, ifMatch string) error

	// Registration returns the registration record of a registration ID.
	Registration(ctx context.Context, registrationID string) (*Registration, error)
	// SaveRegistration writes a registration record and the operation that
	// produced it, and the certificate it issued (r.Issued), atomically.
	// The certificates the record delivers (Result.IssuedCertificateChain,
	// IssuedClientCertificate) are in the operation and the record returned,
	// and are not kept in the record: Registration does not return them.
	// ifMatch is the etag of the record the caller read ("" when there was
	// none), so that two concurrent registrations of one device cannot both
	// win: the loser gets ErrConflict or ErrPreconditionFailed and must
	// re-read. The store assigns the record's etag and keeps
	// createdDateTimeUtc of an existing record. op is written as given: the
	// final operation of a job carries no Job, which ends it.
	SaveRegistration(ctx context.Context, r *Registration, ifMatch string, op *Operation) (*Registration, error)
	DeleteRegistration(ctx context.Context, registrationID, ifMatch string) error
	// RegistrationsByGroup pages through the records of one enrollment group.
	RegistrationsByGroup(ctx context.Context, groupID, after string, limit int) (Page[*Registration], error)

	// Operation returns an operation by ID.
	Operation(ctx context.Context, operationID string) (*Operation, error)
	// PutOperation writes an operation on its own, one that carries no
	// registration record: the outcome of a disabled enrollment (a refusal
	// is never stored), or an "assigning" operation with the Job that
	// will finish it and the lease of the node running that job.
	PutOperation(ctx context.Context, op *Operation) error
	// ClaimOperation takes over the job of an "assigning" operation whose
	// lease expired before now: it sets the lease to leaseUntil and returns
	// the operation, job included. Of callers racing for one operation,
	// exactly one succeeds; the others, and any caller whose operation has
	// no job or a lease that has not expired, get ErrPreconditionFailed.
	// ErrNotFound when there is no such operation.
	ClaimOperation(ctx context.Context, operationID string, now, leaseUntil time.Time) (*Operation, error)
	// ExpiredJobs returns up to limit operations that have a job whose
	// lease expired before now, the oldest lease first: the work of nodes
	// that died, for a sweeper to claim.
	ExpiredJobs(ctx context.Context, now time.Time, limit int) ([]*Operation, error)
	// DeleteOperationsBefore removes operations that expired before t.
	DeleteOperationsBefore(ctx context.Context, t time.Time) (int, error)

	// Registrations pages through every registration record, in key order.
	Registrations(ctx context.Context, after string, limit int) (Page[*Registration], error)

	// AddRefusals appends entries to the refusal journal, in one
	// transaction. The store assigns each entry's ID (the caller's is
	// ignored); an entry without a time gets the current time.
	AddRefusals(ctx context.Context, rs []*Refusal) error
	// Refusals pages through the journal entries f selects, newest first:
	// up to limit entries after `after` (a Page.Next; "" for the newest).
	// An `after` this store did not return is an error.
	Refusals(ctx context.Context, f RefusalFilter, after string, limit int) (Page[*Refusal], error)
	// TrimRefusals deletes the journal entries older than before, and the
	// oldest entries beyond the newest keep ones (keep <= 0: none are kept
	// by count), and returns how many it deleted.
	TrimRefusals(ctx context.Context, keep int, before time.Time) (int, error)

	// Counts returns how many records of each kind the store holds.
	Counts(ctx context.Context) (*Counts, error)
	// Restore writes records exactly as given, etags and timestamps
	// included, creating them or overwriting the records with the same key,
	// in one transaction. It is how `dpsd import` moves an instance between
	// databases; everything else goes through the Put methods and their
	// etag rules. A record without an etag gets a new one, and one without
	// timestamps gets the current time.
	Restore(ctx context.Context, recs []Record) error
	// RestoreInstance creates or replaces the instance with inst, ID scope
	// and server CA included (import --force).
	RestoreInstance(ctx context.Context, inst *Instance) error
	// RestoreAll runs fn with a Restorer whose writes are one transaction:
	// all of them commit when fn returns nil, none when it fails. It is
	// how `dpsd import` either completes or leaves the database as it was.
	// The store's per-call timeout does not apply inside (an import takes
	// as long as its file): ctx bounds it. It is not retried.
	RestoreAll(ctx context.Context, fn func(Restorer) error) error

	// RuntimeSetting returns a run-time setting by name, or ErrNotFound.
	// Run-time settings (the fault injection rules) are what operators
	// change while dpsd serves; in the database, every node reads the one
	// written last.
	RuntimeSetting(ctx context.Context, name string) (*RuntimeSetting, error)
	PutRuntimeSetting(ctx context.Context, s *RuntimeSetting, ifMatch string) (*RuntimeSetting, error)
	DeleteRuntimeSetting(ctx context.Context, name, ifMatch string) error

	// ConfigVersion returns a value that changes with every committed
	// write of what registration decisions read and rarely changes: the
	// instance, linked hubs, CA certificates and enrollment groups (a
	// Restore or RestoreInstance of them included), through any process
	// sharing the database. Other writes leave it. A cache of those
	// records (internal/store/cache) reads it to know when to drop them.
	// The value is opaque: compare it for equality only.
	ConfigVersion(ctx context.Context) (int64, error)

	// Ping checks that the database answers.
	Ping(ctx context.Context) error
	Close() error
}

// Restorer is what RestoreAll lends fn: Store's Instance, Restore and
// RestoreInstance, inside one transaction.
type Restorer interface {
	Instance(ctx context.Context) (*Instance, error)
	Restore(ctx context.Context, recs []Record) error
	RestoreInstance(ctx context.Context, inst *Instance) error
}

// Record is one record of Restore: exactly one field is set.
type Record struct {
	Policy        *Policy
	CACertificate *CACertificate
	LinkedHub     *LinkedHub
	Enrollment    *dps.IndividualEnrollment
	Group         *dps.EnrollmentGroup
	Registration  *Registration
	IssuingCA     *IssuingCA
	// IssuedCertificate is restored as given, revocation included.
	IssuedCertificate *IssuedCertificate
}

// Counts are the numbers of records of each kind.
type Counts struct {
	Policies       int64 `json:"policies"`
	CACertificates int64 `json:"caCertificates"`
	LinkedHubs     int64 `json:"linkedHubs"`
	Groups         int64 `json:"enrollmentGroups"`
	Enrollments    int64 `json:"enrollments"`
	Registrations  int64 `json:"registrations"`
	Operations     int64 `json:"operations"`
	// Certificate issuance; omitted from JSON when zero, so exports of
	// instances that issue nothing read as before.
	IssuingCAs         int64 `json:"issuingCAs,omitempty"`
	IssuedCertificates int64 `json:"issuedCertificates,omitempty"`
}

// Page is one page of a keyset-paginated list. Next is empty on the last page.
type Page[T any] struct {
	Items []T
	Next  string
}

// Instance is the identity of a dpsd instance, created on first start.
type Instance struct {
	IDScope          string
	CreatedAt        time.Time
	AllocationPolicy string // instance default: hashed unless set
	// The server CA signs the server certificate; clients trust the CA.
	ServerCACertPEM []byte
	ServerCAKeyPEM  []byte
	// The server certificate and key (PEM) and the host names it covers.
	ServerCertPEM []byte
	ServerKeyPEM  []byte
	// Extra host names the server certificate was issued for.
	HostNames []string
	// TPMChallengeSecret (32 random bytes) derives the keys of the TPM
	// challenges (internal/attest), so that every node of the instance
	// verifies what any node issued. Set once: UpdateInstance keeps the
	// stored one and sets it only when there is none.
	TPMChallengeSecret []byte
}

// Policy is a shared access policy of the service API.
type Policy struct {
	Name         string
	PrimaryKey   string // base64
	SecondaryKey string // base64
	Rights       []string
	Etag         string
	Created      time.Time
	Updated      time.Time
}

// CACertificate is a CA certificate uploaded to the instance.
type CACertificate struct {
	Name             string
	CertificateDER   []byte
	SHA256Thumbprint string // upper-case hex; derived from CertificateDER by the caller
	Subject          []byte // raw DER subject; derived from CertificateDER by the caller
	IsVerified       bool
	VerificationCode string // last code generated, for proof of possession
	Etag             string
	Created          time.Time
	Updated          time.Time
}

// LinkedHub is an IoT hub devices can be assigned to.
type LinkedHub struct {
	Name                  string // host name, e.g. myhub.azure-devices.net; may carry a port
	ConnectionString      string // may be empty
	Location              string
	AllocationWeight      int
	ApplyAllocationPolicy bool
	// DeviceRegistry names where dpsd creates the devices it assigns to
	// the hub (internal/hub's kinds: none, azure-iothub, webhook); ""
	// means none.
	DeviceRegistry string
	// RegistryWebhookURL and RegistryWebhookSecret configure the webhook
	// registry.
	RegistryWebhookURL    string
	RegistryWebhookSecret string
	Etag                  string
	Created               time.Time
	Updated               time.Time
}

// Registration is a device's registration record.
type Registration struct {
	// Result is the record as the device API returns it; its etag and
	// timestamps are set by the store.
	Result *dps.DeviceRegistrationResult
	// EnrollmentGroupID is the group the device registered through; empty for
	// an individual enrollment. Indexed for RegistrationsByGroup.
	EnrollmentGroupID string
	// DevicePayload is the payload the device sent with its last register
	// request (custom allocation and operators read it); nil when none.
	DevicePayload json.RawMessage
	// Placement is where the device is: the hub and device ID of its last
	// successful assignment. A later registration that fails keeps it (the
	// device is still there), and it is empty when the device has never
	// been assigned or dpsd removed it.
	Placement Placement
	// AppliedTwin is the twin (tags and desired properties) dpsd wrote to
	// the device's hub at its placement; nil when none.
	AppliedTwin *dps.InitialTwin
	// Issued is the certificate this registration issued (the device sent a
	// CSR): SaveRegistration records it in the same transaction as the
	// record, so that a certificate is recorded if and only if the
	// registration that delivers it is. Reads leave it nil.
	Issued *IssuedCertificate
}

// Origins of an issuing CA.
const (
	OriginGenerated = "generated" // made by dpsd; its key never left it
	OriginImported  = "imported"  // certificate and key given by the operator
)

// IssuingCA is a certificate authority of the instance that issues device
// certificates.
type IssuingCA struct {
	Name string
	// CertificateDER is the CA certificate; ChainDER the certificates above
	// it, each issued by the next, up to the root (empty for a root).
	CertificateDER []byte
	ChainDER       [][]byte
	// PrivateKeyPEM is the CA's private key, PKCS#8 PEM. Like the server
	// CA's key, it is kept in the database, and leaves it only in an export.
	PrivateKeyPEM []byte
	Origin        string // OriginGenerated or OriginImported
	// CertificateValidityDays is how long the certificates it issues are
	// valid (never beyond the CA's own expiry).
	CertificateValidityDays int
	// ExtendedKeyUsages of the certificates it issues: "clientAuth", and
	// "serverAuth" when the devices also serve TLS.
	ExtendedKeyUsages []string
	Etag              string
	Created           time.Time
	Updated           time.Time
}

// IssuedCertificate is the record of a certificate an issuing CA signed for
// a device.
type IssuedCertificate struct {
	SerialNumber   string // upper-case hex
	RegistrationID string
	// EnrollmentGroupID is the group the device registered through when the
	// certificate was issued; empty for an individual enrollment.
	EnrollmentGroupID string
	IssuingCA         string
	CertificateDER    []byte
	SHA256Thumbprint  string // upper-case hex
	NotBefore         time.Time
	NotAfter          time.Time
	// Created is when it was issued; set by the store.
	Created time.Time
	// RevokedAt is when it was revoked (set by the store); zero while it
	// is not.
	RevokedAt        time.Time
	RevocationReason string
}

// Revoked reports whether the certificate was revoked.
func (c *IssuedCertificate) Revoked() bool { return !c.RevokedAt.IsZero() }

// IssuedFilter selects issued certificates; empty fields select all.
type IssuedFilter struct {
	RegistrationID string
	IssuingCA      string
}

// Revocation names what RevokeIssuedCertificates revokes: one certificate
// by SerialNumber, or every certificate of a RegistrationID (exactly one of
// the two), with an RFC 5280 reason name ("" for unspecified).
type Revocation struct {
	SerialNumber   string
	RegistrationID string
	Reason         string
}

// Refusal is one entry of the refusal journal: a device request dpsd
// refused, and what the device presented. It holds no key, token signature
// or private material: Credential is a summary.
type Refusal struct {
	// ID is assigned by the store; it orders entries of the same Time.
	ID             string
	Time           time.Time
	Transport      string // https, mqtt, mqtt-ws
	Operation      string // register, poll, lookup
	RegistrationID string // as the device sent it
	// Credential summarizes what the device presented: certificate subjects,
	// issuers and thumbprints, or the SAS token's key name, resource and
	// expiry.
	Credential string
	Status     int // the HTTP status (MQTT: the response topic's status)
	ErrorCode  int
	Reason     string
	TrackingID string
	// Peer is the address the request came from, host:port.
	Peer string
}

// RefusalFilter selects journal entries; its zero fields select all.
type RefusalFilter struct {
	RegistrationID string // case-insensitive
	ErrorCode      int
	Since          time.Time // inclusive
	Until          time.Time // exclusive
}

// Placement is a hub and a device ID in it.
type Placement struct {
	Hub      string
	DeviceID string
}

// IsZero reports whether the placement names no hub.
func (p Placement) IsZero() bool { return p.Hub == "" }

// RuntimeSetting is a setting changed at run time: a JSON document that
// its user interprets, and the store keeps as text. `dpsd export` leaves
// run-time settings out.
type RuntimeSetting struct {
	Name    string
	Doc     string
	Etag    string
	Created time.Time
	Updated time.Time
}

// Operation is the outcome (or progress) of one register request.
type Operation struct {
	ID             string
	RegistrationID string
	Status         string // dps.Status*
	// Result is the registrationState to return, nil while assigning.
	Result *dps.DeviceRegistrationResult
	// Job is the pending work of an "assigning" operation, opaque to the
	// store (the provisioning pipeline encodes it); nil once the operation
	// is terminal.
	Job json.RawMessage
	// LeaseUntil is when the node running Job loses it, and another may
	// claim it (ClaimOperation); zero without a job.
	LeaseUntil time.Time
	CreatedAt  time.Time
	ExpiresAt  time.Time
}
