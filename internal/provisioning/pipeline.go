// Package provisioning is where a registration is decided. Every transport
// (HTTPS, MQTT) hands a Request to the Pipeline and renders what it returns:
//
//	admit: addressing, body shape (a CSR is checked here), credentials
//	       (internal/attest)           → refuse, or
//	disabled enrollment                → terminal status "disabled", or
//	a CSR the enrollment cannot issue for → refuse, or
//	decide: hub (internal/allocation), re-provisioning (decide.go)
//	  nothing to call out → write the record and the operation in one
//	                        transaction: "assigned", or "failed" with a reason
//	  custom allocation, or a hub with a device registry (internal/hub)
//	                      → a job (job.go): "assigning", then the calls out
//	                        (callout.go), then the record and the operation
//	a requested certificate is issued when the record is "assigned"
//	(issue.go), and written with the record and the operation
//
// Refusals are returned as *dpserr.Error (401002 etc.) and write nothing.
// Store failures map with dpserr.NoRecord: a device names no record to be
// missing or stale, assign retries the one conflict a registration can meet,
// and any other is the store breaking its contract (500).
// The assignment normally completes inside the register request, so its
// answer already carries the terminal status; in strict mode the answer is
// "assigning" and the device polls, exactly as with Azure. A job that
// outlasts AssignWait is answered "assigning" in either mode.
package provisioning

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/dpsd/dpsd/internal/allocation"
	"github.com/dpsd/dpsd/internal/attest"
	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/hub"
	"github.com/dpsd/dpsd/internal/issuance"
	"github.com/dpsd/dpsd/internal/metrics"
	"github.com/dpsd/dpsd/internal/outbound"
	"github.com/dpsd/dpsd/internal/store"
	"github.com/dpsd/dpsd/internal/wait"
)

// Pipeline decides registrations.
type Pipeline struct {
	// Store is where records are read and written. It may keep what rarely
	// changes in memory (internal/store/cache), with Sync.
	Store store.Store
	// Sync, when set, runs when a device request arrives, before anything
	// is read, and when a job reads again: a cache in front of the store
	// syncs there, so that every decision sees each write committed before
	// it, through any node.
	Sync    func(ctx context.Context) error
	Attest  *attest.Attestor
	Log     *slog.Logger
	Metrics *metrics.Metrics
	// IDScope is the instance's ID scope (immutable).
	IDScope string
	// Strict answers register with "assigning" first, as Azure does.
	Strict bool
	// RetryAfter (seconds) accompanies every "assigning" answer.
	RetryAfter int
	// OperationTTL is how long an operation can be polled.
	OperationTTL time.Duration
	// Issuer signs the certificates devices request (nil: the defaults).
	Issuer *issuance.Issuer
	Now    func() time.Time
	// Journal records every refusal, and every disabled outcome (nil:
	// none are recorded).
	Journal Journal

	// Outbound makes the calls out of an assignment: hubs' device
	// registries and custom allocation webhooks. Without it, an
	// assignment that needs one fails.
	Outbound *outbound.Client
	// HubRetry bounds the retries of a hub call (internal/hub's defaults
	// when zero).
	HubRetry hub.Retry
	// Geo is what geoLatency allocation knows of this node's place.
	Geo allocation.Geo
	// AssignWait is how long a register request waits for an assignment
	// that calls out before it answers "assigning" (DefaultAssignWait when
	// zero); AssignTimeout bounds that assignment (DefaultAssignTimeout).
	AssignWait, AssignTimeout time.Duration

	jobs jobs
	// Admitted, when set, is called with every request admit lets through
	// and the identity it proved, before anything is decided; an error it
	// returns is the answer, and is not counted as a refusal. Fault
	// injection scoped to an enrollment hooks in here (internal/limits).
	Admitted func(ctx context.Context, req *Request, id *attest.Identity) error
}

// Request is one device request, whatever the transport.
type Request struct {
	Transport      string // "https", "mqtt", "mqtt-ws": metrics and logs
	TrackingID     string // ties the answer to the log line
	IDScope        string
	RegistrationID string
	// APIVersion is the device's api-version (HTTPS query, MQTT user name):
	// legacy versions keep re-registering devices on their hub.
	APIVersion string
	// Body is the DeviceRegistration the device sent; nil when it sent none.
	Body        *dps.DeviceRegistration
	Credentials attest.Credentials
	// Peer is the address the request came from (host:port), for the
	// refusal journal.
	Peer string
}

// Answer is what a transport renders: the status code (HTTP status, or the
// MQTT response topic's status), the Retry-After seconds when the device
// must poll, and the body.
type Answer struct {
	Status     int
	RetryAfter int
	Body       *dps.RegistrationOperationStatus
	// Challenge, instead of Body, answers a TPM device's first register
	// (Status 401; HTTPS only).
	Challenge *attest.Challenge
}

const saveAttempts = 8

func (p *Pipeline) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

// Register authenticates the device and assigns it.
func (p *Pipeline) Register(ctx context.Context, req Request) (_ *Answer, err error) {
	defer p.journal(&req, OpRegister, &err)
	// The device's enrollment and record are read together.
	ctx = store.WithDeviceReads(ctx)
	start := p.now()
	var rec record
	var csr *issuance.CSR
	id, err := p.admit(ctx, &req, &rec, OpRegister, func(b *dps.DeviceRegistration) (err error) {
		csr, err = issuance.FromBody(b, req.RegistrationID)
		return err
	})
	if ch := (*attest.Challenge)(nil); errors.As(err, &ch) {
		return &Answer{Status: http.StatusUnauthorized, Challenge: ch}, nil
	}
	if err != nil {
		return nil, err
	}
	if id.Mechanism == dps.AttestationTPM && !id.Disabled() {
		if err := p.Attest.IssueTPMHubKey(id, tpmKeys(req.Body)); err != nil {
			return nil, p.refuse(&req, err)
		}
	}
	var op *store.Operation
	var cert *certificateRequest
	viaJob := false // a job observes its outcome when it ends
	switch {
	case id.Disabled():
		op, err = p.disabled(ctx, req, id)
	default:
		if cert, err = p.checkIssuance(ctx, id, csr); err != nil {
			return nil, p.refuse(&req, err)
		}
		op, viaJob, err = p.assign(ctx, req, id, &rec, start, cert)
	}
	if err != nil {
		return nil, err
	}
	if !viaJob {
		p.observe(req, id, op, start, cert.logAttrs(op)...)
	}
	if op.Job != nil || p.Strict {
		return p.assigningAnswer(op, req.RegistrationID, false), nil
	}
	status := &dps.RegistrationOperationStatus{OperationID: op.ID, Status: op.Status, RegistrationState: op.Result}
	// Retry-After accompanies every register 202, as with Azure; a device
	// that reads the terminal status does not wait for it.
	return &Answer{Status: http.StatusAccepted, RetryAfter: p.RetryAfter, Body: status}, nil
}

// OperationStatus answers a poll: 202 while assigning, 200 when terminal.
func (p *Pipeline) OperationStatus(ctx context.Context, req Request, operationID string) (_ *Answer, err error) {
	defer p.journal(&req, OpPoll, &err)
	if _, err := p.admit(ctx, &req, &record{}, OpPoll, nil); err != nil {
		return nil, err
	}
	op, err := p.Store.Operation(ctx, operationID)
	if errors.Is(err, store.ErrNotFound) || err == nil && (!strings.EqualFold(op.RegistrationID, req.RegistrationID) || p.now().After(op.ExpiresAt)) {
		return nil, dpserr.NotFound(dpserr.CodeOperationNotFound, "operation %q of registration %q not found (operations can be polled for %s after the register request)", operationID, req.RegistrationID, p.ttl())
	}
	if err != nil {
		return nil, dpserr.FromStore(err, dpserr.NoRecord, "")
	}
	if op.Job != nil && !p.now().Before(op.LeaseUntil) {
		// The node running the job stopped: take it over.
		if final := p.resume(ctx, op, true); final != nil {
			op = final
		}
	}
	if op.Status == dps.StatusAssigning {
		return p.assigningAnswer(op, req.RegistrationID, true), nil
	}
	return &Answer{Status: http.StatusOK, Body: &dps.RegistrationOperationStatus{OperationID: op.ID, Status: op.Status, RegistrationState: op.Result}}, nil
}

// RegistrationStatus returns the device's registration record (the device
// API's status lookup).
func (p *Pipeline) RegistrationStatus(ctx context.Context, req Request) (_ *dps.DeviceRegistrationResult, err error) {
	defer p.journal(&req, OpLookup, &err)
	if b := req.Body; b != nil && (b.CSR != "" || b.ClientCertificateCSR != "") {
		return nil, dpserr.BadRequest("a status lookup must not carry a csr; send it with the register request")
	}
	ctx = store.WithDeviceReads(ctx)
	var rec record
	if _, err := p.admit(ctx, &req, &rec, OpLookup, nil); err != nil {
		return nil, err
	}
	reg, err := p.load(ctx, &rec, req.RegistrationID)
	if err != nil {
		return nil, err
	}
	if reg == nil {
		return nil, dpserr.NotFound(dpserr.CodeRegistrationNotFound, "registration %q has no registration record: the device has not registered (or its record was deleted)", req.RegistrationID)
	}
	// The certificates delivered at registration are not part of the
	// lookup's answer, as with Azure.
	return reg.Result.WithoutIssued(), nil
}

// sync runs Sync; a store that cannot answer is a 503.
func (p *Pipeline) sync(ctx context.Context) error {
	if p.Sync == nil {
		return nil
	}
	return dpserr.FromStore(p.Sync(ctx), dpserr.NoRecord, "")
}

func (p *Pipeline) ttl() time.Duration {
	if p.OperationTTL > 0 {
		return p.OperationTTL
	}
	return 24 * time.Hour
}

// record is the device's registration record, read at most once per request
// (a symmetric-key device's record names its group, which spares a scan of
// every group; the assignment then builds on the same record).
type record struct {
	reg  *store.Registration // nil when the device has none
	read bool
}

// load returns the device's registration record (nil when it has none),
// reading it the first time.
func (p *Pipeline) load(ctx context.Context, r *record, registrationID string) (*store.Registration, error) {
	if r.read {
		return r.reg, nil
	}
	reg, err := p.Store.Registration(ctx, registrationID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		reg = nil
	case err != nil:
		return nil, dpserr.FromStore(err, dpserr.NoRecord, "")
	}
	r.reg, r.read = reg, true
	return reg, nil
}

// admit is the door every device request passes. It takes three steps, in
// this order; the first refusal ends it, is counted, and writes nothing:
//
//  1. addressing: this instance's ID scope, a valid registration ID, a body
//     that names no other one (checkAddressing);
//  2. shape: what this operation's body must not carry (shape; nil when
//     the operation has no rule of its own);
//  3. credentials: who the device is (identify).
//
// A TPM device's first register is neither admitted nor refused: the
// error is its *attest.Challenge. rec caches the device's registration
// record for the steps that follow; op is the operation (OpRegister...).
func (p *Pipeline) admit(ctx context.Context, req *Request, rec *record, op string, shape func(*dps.DeviceRegistration) error) (*attest.Identity, error) {
	if err := p.checkAddressing(req); err != nil {
		return nil, p.refuse(req, err)
	}
	if shape != nil {
		if err := shape(req.Body); err != nil {
			return nil, p.refuse(req, err)
		}
	}
	if err := p.sync(ctx); err != nil {
		return nil, err
	}
	id, err := p.identify(ctx, req, rec, op)
	if ch := (*attest.Challenge)(nil); errors.As(err, &ch) {
		return nil, err
	}
	if err != nil {
		return nil, p.refuse(req, err)
	}
	if p.Admitted != nil {
		if err := p.Admitted(ctx, req, id); err != nil {
			return nil, err
		}
	}
	return id, nil
}

// checkAddressing checks what the request is addressed to.
func (p *Pipeline) checkAddressing(req *Request) error {
	if !strings.EqualFold(req.IDScope, p.IDScope) {
		return dpserr.Unauthorized("ID scope %q is not served here; this dpsd instance's ID scope is %s", dps.Truncate(req.IDScope), p.IDScope)
	}
	if err := dps.ValidateID("registration ID", req.RegistrationID); err != nil {
		return dpserr.BadRequest("%v", err)
	}
	if b := req.Body; b != nil && b.RegistrationID != "" && !strings.EqualFold(b.RegistrationID, req.RegistrationID) {
		return dpserr.BadRequest("registrationId %q in the body does not match %q in the request path", dps.Truncate(b.RegistrationID), req.RegistrationID)
	}
	return nil
}

// identify authenticates the device by the credentials it presented: a SAS
// token means a symmetric key (or the key of a TPM challenge, when the
// registration ID's enrollment is a TPM's), a TLS client chain X.509, and
// an endorsement key in the body without either a TPM's first register,
// answered with its challenge (register only).
func (p *Pipeline) identify(ctx context.Context, req *Request, rec *record, op string) (*attest.Identity, error) {
	c := req.Credentials
	keys := tpmKeys(req.Body)
	overMQTT := strings.HasPrefix(req.Transport, "mqtt")
	if keys != nil && overMQTT {
		return nil, errTPMOverMQTT
	}
	var id *attest.Identity
	var err error
	switch {
	case c.SAS != "":
		// The group of the device's last registration is tried first.
		hint := ""
		if reg, err := p.load(ctx, rec, req.RegistrationID); err == nil && reg != nil {
			hint = reg.EnrollmentGroupID
		}
		id, err = attested(p.Attest.SymmetricKey(ctx, req.IDScope, req.RegistrationID, c.SAS, hint))
	case len(c.Certificates) > 0:
		id, err = attested(p.Attest.X509(ctx, req.RegistrationID, c.Certificates))
	case keys != nil:
		err := p.Attest.TPMChallenge(ctx, req.RegistrationID, keys)
		if ch := (*attest.Challenge)(nil); errors.As(err, &ch) {
			if op != OpRegister {
				// Only a status lookup has a body and no token here.
				return nil, dpserr.Unauthorized("a TPM device's status lookup must carry a SAS token signed with the key of its TPM challenge: send the register first")
			}
			return nil, ch
		}
		return nil, dpserr.FromStore(err, dpserr.NoRecord, "")
	default:
		return nil, dpserr.Unauthorized("no credentials: present the device certificate (and its chain) in the TLS handshake for X.509, send an Authorization SAS token for a symmetric key, or send the TPM's endorsement and storage root keys in the register body for TPM attestation")
	}
	if err == nil && id.Mechanism == dps.AttestationTPM && overMQTT {
		return nil, errTPMOverMQTT
	}
	return id, err
}

// errTPMOverMQTT refuses TPM attestation over MQTT.
var errTPMOverMQTT = dpserr.Unauthorized("TPM attestation is not offered over MQTT: Azure DPS does not offer it over MQTT either (only over HTTPS and AMQP); register this device over HTTPS")

// tpmKeys are the TPM keys of a register body, or nil.
func tpmKeys(b *dps.DeviceRegistration) *dps.TPMAttestation {
	if b == nil || b.TPM == nil || b.TPM.EndorsementKey == "" && b.TPM.StorageRootKey == "" {
		return nil
	}
	return b.TPM
}

// disabled records the terminal "disabled" outcome of an operation. The
// registration record is not written: a disabled enrollment refuses the
// device, and refusals change nothing.
func (p *Pipeline) disabled(ctx context.Context, req Request, id *attest.Identity) (*store.Operation, error) {
	now := p.now()
	res := &dps.DeviceRegistrationResult{
		RegistrationID:         req.RegistrationID,
		Status:                 dps.StatusDisabled,
		ErrorCode:              dpserr.CodeUnauthorized,
		ErrorMessage:           id.EnrollmentName() + " is disabled",
		LastUpdatedDateTimeUtc: dps.NewTime(now),
	}
	setAttestation(res, id)
	op := p.newOperation(req, dps.StatusDisabled, res, now)
	if err := p.Store.PutOperation(ctx, op); err != nil {
		return nil, dpserr.FromStore(err, dpserr.NoRecord, "")
	}
	p.record(&req, OpRegister, http.StatusAccepted, res.ErrorCode, res.ErrorMessage)
	return op, nil
}

// assign decides and writes the record: at once when nothing calls out (one
// transaction), else through a job (job.go). Two registrations of one
// device racing each other both read the record, and the store lets only
// one write win; the other reads again and decides again.
//
// viaJob reports that the operation comes from a job (still running, or
// ended), which observes its outcome itself. cert, when the device sent a
// CSR, is issued once the record is assigned.
func (p *Pipeline) assign(ctx context.Context, req Request, id *attest.Identity, cur *record, start time.Time, cert *certificateRequest) (op *store.Operation, viaJob bool, err error) {
	for attempt := 1; ; attempt++ {
		prev, err := p.load(ctx, cur, req.RegistrationID)
		if err != nil {
			return nil, false, err
		}
		in, err := p.readInputs(ctx, id.Settings())
		if err != nil {
			return nil, false, err
		}
		d := p.decide(&req, id, prev, in)
		if d.callsOut() {
			op, err := p.startJob(ctx, &req, id, start, &preread{prev: prev, in: in, cert: cert})
			return op, true, err
		}
		rec := d.record(&req, nil)
		if err := p.issue(cert, rec); err != nil {
			return nil, false, err
		}
		ifMatch := ""
		if prev != nil {
			ifMatch = prev.Result.Etag
		}
		now := p.now()
		op = p.newOperation(req, rec.Result.Status, nil, now)
		stored, err := p.Store.SaveRegistration(ctx, rec, ifMatch, op)
		if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrPreconditionFailed) {
			if attempt == saveAttempts {
				return nil, false, dpserr.New(http.StatusConflict, dpserr.CodeConcurrentRegistration, "Precondition failed. Registration %q was changed by a concurrent request; retry", req.RegistrationID)
			}
			cur.read = false // another request changed the record: read it again
			// Spread the retries of racing requests so they stop colliding.
			if err := wait.Sleep(ctx, time.Duration(rand.IntN(attempt*5)+1)*time.Millisecond); err != nil {
				return nil, false, dpserr.FromStore(err, dpserr.NoRecord, "")
			}
			continue
		}
		if err != nil {
			return nil, false, dpserr.FromStore(err, dpserr.NoRecord, "")
		}
		op.Result = stored.Result
		return op, false, nil
	}
}

func (p *Pipeline) newOperation(req Request, status string, res *dps.DeviceRegistrationResult, now time.Time) *store.Operation {
	return &store.Operation{
		ID:             dps.NewOperationID(5),
		RegistrationID: req.RegistrationID,
		Status:         status,
		Result:         res,
		CreatedAt:      now,
		ExpiresAt:      now.Add(p.ttl()),
	}
}

// setAttestation fills the attestation-specific part of a result.
func setAttestation(res *dps.DeviceRegistrationResult, id *attest.Identity) {
	switch id.Mechanism {
	case dps.AttestationX509:
		res.X509 = &dps.X509RegistrationResult{CertificateInfo: id.Leaf, EnrollmentGroupID: id.GroupID(), SigningCertificateInfo: id.Signer}
	case dps.AttestationSymmetricKey:
		if id.Group != nil {
			res.SymmetricKey = &dps.SymmetricKeyRegistrationResult{EnrollmentGroupID: id.GroupID()}
		}
	case dps.AttestationTPM:
		if id.HubKeyBlob != "" {
			res.TPM = &dps.TPMRegistrationResult{AuthenticationKey: id.HubKeyBlob}
		}
	}
}

// refuse counts a refusal and returns it.
func (p *Pipeline) refuse(req *Request, err error) error {
	if p.Metrics != nil {
		p.Metrics.Refusals.WithLabelValues(req.Transport, strconv.Itoa(dpserr.As(err).Code)).Inc()
	}
	return err
}

// observe logs and counts a registration's outcome; more are attributes of
// the log line.
func (p *Pipeline) observe(req Request, id *attest.Identity, op *store.Operation, start time.Time, more ...any) {
	attrs := append([]any{"trackingId", req.TrackingID, "transport", req.Transport, "registrationId", req.RegistrationID,
		"enrollment", id.EnrollmentName(), "status", op.Status, "operationId", op.ID}, more...)
	if r := op.Result; r != nil {
		if r.AssignedHub != "" {
			attrs = append(attrs, "assignedHub", r.AssignedHub, "substatus", r.Substatus)
		}
		if r.ErrorMessage != "" {
			attrs = append(attrs, "errorCode", r.ErrorCode, "reason", r.ErrorMessage)
		}
	}
	p.Log.Info("registration", attrs...)
	if p.Metrics != nil {
		p.Metrics.Registrations.WithLabelValues(req.Transport, id.Mechanism, op.Status).Inc()
		p.Metrics.RegistrationDuration.WithLabelValues(req.Transport).Observe(p.now().Sub(start).Seconds())
	}
}

// attested passes attestation's refusals through and maps the store
// failures it met like any other, so that a database outage answers 503.
func attested(id *attest.Identity, err error) (*attest.Identity, error) {
	if err != nil {
		return nil, dpserr.FromStore(err, dpserr.NoRecord, "")
	}
	return id, nil
}
