package provisioning

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/dpsd/dpsd/internal/attest"
	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/store"
	"github.com/dpsd/dpsd/internal/wait"
)

// An assignment that calls out (custom allocation, a hub's device
// registry) runs as a job, so that a slow hub never holds a device's
// request and a node that dies never loses a registration:
//
//  1. the register request stores an "assigning" operation that carries
//     the job (who the device is, what it sent) and a lease, the time until
//     which this node owns it;
//  2. the job runs detached from the request, bounded by AssignTimeout:
//     it decides, calls out, and saves the record with the final operation
//     in one transaction, which ends the job;
//  3. the request waits up to AssignWait for it: the device gets the
//     terminal status at once, or "assigning" and polls.
//
// A job whose lease has run out (its node died, or was stopped in the
// middle) is claimed by whichever node sees it first: a poll of the
// operation, or any node's sweeper (Sweep); the store lets exactly one
// claim win. Hub calls are create-or-update and delete-if-present, so
// running a job again is safe.

// Defaults of the job settings.
const (
	DefaultAssignWait    = 3 * time.Second
	DefaultAssignTimeout = 30 * time.Second
)

// job is the pending work of an "assigning" operation, as stored with it.
type job struct {
	RegistrationID string          `json:"registrationId"` // as the device sent it
	Transport      string          `json:"transport"`
	TrackingID     string          `json:"trackingId"`
	APIVersion     string          `json:"apiVersion,omitempty"`
	Payload        json.RawMessage `json:"payload,omitempty"`
	Started        time.Time       `json:"started"`
	// The identity the device proved, with the enrollment as it was then.
	Mechanism  string                    `json:"mechanism"`
	Individual *dps.IndividualEnrollment `json:"individualEnrollment,omitempty"`
	Group      *dps.EnrollmentGroup      `json:"enrollmentGroup,omitempty"`
	Leaf       *dps.X509CertificateInfo  `json:"certificateInfo,omitempty"`
	Signer     *dps.X509CertificateInfo  `json:"signingCertificateInfo,omitempty"`
	Issued     bool                      `json:"issuedCertificate,omitempty"`
	// A TPM device's hub keys, and the blob that delivers the primary.
	HubKey          string `json:"hubKey,omitempty"`
	HubSecondaryKey string `json:"hubSecondaryKey,omitempty"`
	HubKeyBlob      string `json:"hubKeyBlob,omitempty"`
	// The certificate request the device sent (issue.go), as it sent it.
	CSR       string `json:"csr,omitempty"`
	ClientCSR string `json:"clientCertificateCsr,omitempty"`
}

func newJob(req *Request, id *attest.Identity, started time.Time) *job {
	j := &job{RegistrationID: req.RegistrationID, Transport: req.Transport, TrackingID: req.TrackingID, APIVersion: req.APIVersion,
		Started: started, Mechanism: id.Mechanism, Individual: id.Individual, Group: id.Group, Leaf: id.Leaf, Signer: id.Signer,
		HubKey: id.HubKey, HubSecondaryKey: id.HubSecondaryKey, HubKeyBlob: id.HubKeyBlob, Issued: id.Issued}
	if req.Body != nil {
		j.Payload, j.CSR, j.ClientCSR = req.Body.Payload, req.Body.CSR, req.Body.ClientCertificateCSR
	}
	return j
}

func (j *job) request() *Request {
	r := &Request{Transport: j.Transport, TrackingID: j.TrackingID, RegistrationID: j.RegistrationID, APIVersion: j.APIVersion}
	if j.Payload != nil || j.CSR != "" || j.ClientCSR != "" {
		r.Body = &dps.DeviceRegistration{Payload: j.Payload, CSR: j.CSR, ClientCertificateCSR: j.ClientCSR}
	}
	return r
}

func (j *job) identity() *attest.Identity {
	return &attest.Identity{Mechanism: j.Mechanism, Individual: j.Individual, Group: j.Group, Leaf: j.Leaf, Signer: j.Signer,
		HubKey: j.HubKey, HubSecondaryKey: j.HubSecondaryKey, HubKeyBlob: j.HubKeyBlob, Issued: j.Issued}
}

// preread is what the register request read before it started the job, so
// that the job's first attempt does not read it again.
type preread struct {
	prev *store.Registration
	in   *inputs
	cert *certificateRequest
}

// jobs tracks the jobs running on this node.
type jobs struct {
	once   sync.Once
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (p *Pipeline) jobContext() context.Context {
	p.jobs.once.Do(func() { p.jobs.ctx, p.jobs.cancel = context.WithCancel(context.Background()) })
	return p.jobs.ctx
}

func (p *Pipeline) assignWait() time.Duration {
	if p.AssignWait > 0 {
		return p.AssignWait
	}
	return DefaultAssignWait
}

func (p *Pipeline) assignTimeout() time.Duration {
	if p.AssignTimeout > 0 {
		return p.AssignTimeout
	}
	return DefaultAssignTimeout
}

// lease is how long a node owns a job: twice its timeout, so that the job
// has ended, and saved its outcome, well before another node may claim it.
func (p *Pipeline) lease() time.Duration { return 2 * p.assignTimeout() }

// startJob stores the "assigning" operation of an assignment that calls
// out, starts its job, and waits for it as the mode says.
func (p *Pipeline) startJob(ctx context.Context, req *Request, id *attest.Identity, start time.Time, s *preread) (*store.Operation, error) {
	b, err := json.Marshal(newJob(req, id, start))
	if err != nil {
		return nil, dpserr.Internal(err)
	}
	now := p.now()
	op := p.newOperation(*req, dps.StatusAssigning, nil, now)
	op.Job, op.LeaseUntil = b, now.Add(p.lease())
	if err := p.Store.PutOperation(ctx, op); err != nil {
		return nil, dpserr.FromStore(err, dpserr.NoRecord, "")
	}
	done := p.launch(op, s)
	if p.Strict {
		return op, nil
	}
	return p.await(ctx, op, done), nil
}

// await returns the job's final operation if it ends within AssignWait
// (and ctx), else op as it is: "assigning".
func (p *Pipeline) await(ctx context.Context, op *store.Operation, done <-chan *store.Operation) *store.Operation {
	t := time.NewTimer(p.assignWait())
	defer t.Stop()
	select {
	case final := <-done:
		if final != nil {
			return final
		}
	case <-t.C:
	case <-ctx.Done():
	}
	return op
}

// launch runs the job of op in the background. The channel receives the
// final operation, or nil when the job ended without one (it was stopped,
// lost its lease, or the store failed: the operation stays "assigning"
// until its lease runs out and another run takes it).
func (p *Pipeline) launch(op *store.Operation, s *preread) <-chan *store.Operation {
	done := make(chan *store.Operation, 1)
	base := p.jobContext()
	p.jobs.wg.Go(func() {
		ctx, cancel := context.WithTimeout(base, p.assignTimeout())
		defer cancel()
		final, err := p.runJob(ctx, op, s)
		if err != nil {
			lvl := p.Log.Warn
			if errors.Is(err, errJobLost) || base.Err() != nil {
				lvl = p.Log.Info
			}
			lvl("assignment left for another run", "operationId", op.ID, "registrationId", op.RegistrationID, "err", err)
		}
		done <- final
	})
	return done
}

var errJobLost = errors.New("another run took the job over")

// runJob decides, calls out and saves, retrying when a concurrent
// registration of the same device changed its record meanwhile.
func (p *Pipeline) runJob(ctx context.Context, op *store.Operation, s *preread) (*store.Operation, error) {
	var j job
	if err := json.Unmarshal(op.Job, &j); err != nil {
		// Nothing can run it: end it rather than leave it assigning.
		return p.endJob(op, dps.StatusFailed, dpserr.CodeInternal, "internal error: the pending assignment cannot be read")
	}
	req, id := j.request(), j.identity()
	// Store calls are bounded by the store's own timeout, and must not be
	// cut short by the job's: its outcome is worth saving.
	sctx := context.WithoutCancel(ctx)
	cert, err := p.jobIssuance(sctx, req, id, s)
	if err != nil {
		e := dpserr.As(err)
		if e.Status >= 500 {
			// The store did not answer: the job stays, for its next run.
			return nil, err
		}
		// The device asked for a certificate that can no longer be issued.
		return p.endJob(op, dps.StatusFailed, e.Code, e.Message)
	}
	for attempt := 1; ; attempt++ {
		var prev *store.Registration
		var in *inputs
		if s != nil && attempt == 1 {
			prev, in = s.prev, s.in
		} else {
			if err := p.sync(sctx); err != nil {
				return nil, err
			}
			var err error
			r := &record{}
			if prev, err = p.load(sctx, r, j.RegistrationID); err != nil {
				return nil, err
			}
			if in, err = p.readInputs(sctx, id.Settings()); err != nil {
				return nil, err
			}
		}
		d := p.decide(req, id, prev, in)
		var out *outcome
		if d.callsOut() {
			// The device's hub identity is the certificate it asked for.
			if d.issued, err = p.preIssue(cert, d); err != nil {
				return nil, err
			}
			out = p.callOut(ctx, req, d)
		}
		if ctx.Err() != nil && p.jobContext().Err() != nil {
			// Stopped, not timed out: another run finishes the job.
			return nil, ctx.Err()
		}
		rec := d.record(req, out)
		if err := p.issue(cert, rec); err != nil {
			return nil, err
		}
		ifMatch := ""
		if prev != nil {
			ifMatch = prev.Result.Etag
		}
		final := &store.Operation{ID: op.ID, RegistrationID: op.RegistrationID, Status: rec.Result.Status, CreatedAt: op.CreatedAt, ExpiresAt: op.ExpiresAt}
		stored, err := p.Store.SaveRegistration(sctx, rec, ifMatch, final)
		if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrPreconditionFailed) {
			// A concurrent registration of the device changed its record.
			// If another run of this job saved it, that is the outcome.
			cur, err := p.Store.Operation(sctx, op.ID)
			switch {
			case err != nil:
				return nil, err
			case cur.Job == nil:
				return cur, nil
			case !cur.LeaseUntil.Equal(op.LeaseUntil):
				return nil, errJobLost
			case attempt == saveAttempts:
				return p.endJob(op, dps.StatusFailed, dpserr.CodeConcurrentRegistration, "Precondition failed. Registration "+j.RegistrationID+" was changed by concurrent requests; register again")
			}
			if err := wait.Sleep(ctx, time.Duration(rand.IntN(attempt*5)+1)*time.Millisecond); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		final.Result = stored.Result
		p.observe(*req, id, final, j.Started, cert.logAttrs(final)...)
		return final, nil
	}
}

// endJob ends a job that cannot save a record with a terminal operation.
func (p *Pipeline) endJob(op *store.Operation, status string, code int, msg string) (*store.Operation, error) {
	final := &store.Operation{ID: op.ID, RegistrationID: op.RegistrationID, Status: status, CreatedAt: op.CreatedAt, ExpiresAt: op.ExpiresAt,
		Result: &dps.DeviceRegistrationResult{RegistrationID: op.RegistrationID, Status: status, ErrorCode: code, ErrorMessage: msg,
			LastUpdatedDateTimeUtc: dps.NewTime(p.now())}}
	if err := p.Store.PutOperation(context.Background(), final); err != nil {
		return nil, err
	}
	p.Log.Warn("assignment ended without a registration record", "operationId", op.ID, "registrationId", op.RegistrationID, "errorCode", code, "reason", msg)
	return final, nil
}

// resume claims the job of an operation whose lease ran out and runs it;
// it returns the final operation, or nil when the job is not done.
func (p *Pipeline) resume(ctx context.Context, op *store.Operation, wait bool) *store.Operation {
	now := p.now()
	claimed, err := p.Store.ClaimOperation(ctx, op.ID, now, now.Add(p.lease()))
	if err != nil {
		if !errors.Is(err, store.ErrPreconditionFailed) {
			p.Log.Warn("claiming an assignment", "operationId", op.ID, "err", err)
		}
		return nil
	}
	p.Log.Info("resuming an assignment whose node stopped", "operationId", op.ID, "registrationId", op.RegistrationID)
	done := p.launch(claimed, nil)
	if !wait {
		return nil
	}
	final := p.await(ctx, claimed, done)
	if final.Job != nil {
		return nil
	}
	return final
}

// Sweep resumes, at once and then every quarter lease, the jobs whose lease
// ran out: those of nodes that died or stopped mid-way. Every node runs
// it; a job is taken by one. It returns when ctx ends.
func (p *Pipeline) Sweep(ctx context.Context) {
	interval := max(p.lease()/4, time.Second)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		ops, err := p.Store.ExpiredJobs(ctx, p.now(), 100)
		if err != nil && ctx.Err() == nil {
			p.Log.Warn("looking for stopped assignments", "err", err)
		}
		for _, op := range ops {
			p.resume(ctx, op, false)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Drain waits for the running jobs to end, until ctx ends; then it stops
// them, and they are left for another node (or this one, restarted) to
// take over when their lease runs out.
func (p *Pipeline) Drain(ctx context.Context) {
	p.jobContext()
	done := make(chan struct{})
	go func() { p.jobs.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		p.jobs.cancel()
		<-done
	}
	p.jobs.cancel()
}

// assigningAnswer is the answer while a job runs.
func (p *Pipeline) assigningAnswer(op *store.Operation, registrationID string, withState bool) *Answer {
	body := &dps.RegistrationOperationStatus{OperationID: op.ID, Status: dps.StatusAssigning}
	if withState {
		body.RegistrationState = &dps.DeviceRegistrationResult{RegistrationID: registrationID, Status: dps.StatusAssigning}
	}
	return &Answer{Status: http.StatusAccepted, RetryAfter: p.RetryAfter, Body: body}
}
