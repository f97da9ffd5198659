package provisioning

import (
	"context"
	"errors"

	"github.com/dpsd/dpsd/internal/attest"
	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/issuance"
	"github.com/dpsd/dpsd/internal/store"
)

// Certificate issuance in the pipeline: the CSR is checked at admission
// (issuance.FromBody, a 400 that stores nothing), then checkIssuance makes
// sure the matched enrollment can issue, and issue signs the certificate
// when the record is built and ends assigned. The record, its operation and
// the issued certificate are written together, so a poll repeated after
// the answer returns the same chain, and a registration that is not stored
// issued nothing. An assignment that runs as a job carries the CSR in the
// job, and a job that calls out signs before it does, so that the hub
// learns the device by the certificate it will present (preIssue).

// certificateRequest is a CSR on its way from admission to the record.
type certificateRequest struct {
	csr *issuance.CSR
	ca  *store.IssuingCA
	// issued is the certificate once signed, kept across the retries of a
	// registration that raced another, so that one request issues once.
	issued *issuance.Issued
}

// checkIssuance returns what is needed to issue for csr under the matched
// enrollment (nil without a csr), or a 400 saying why it cannot.
func (p *Pipeline) checkIssuance(ctx context.Context, id *attest.Identity, csr *issuance.CSR) (*certificateRequest, error) {
	if csr == nil {
		return nil, nil
	}
	name := id.Settings().IssuingCA()
	if name == "" {
		return nil, dpserr.BadRequest("%s does not issue certificates: it names no issuing CA; register without a %s, or name an issuing CA on the enrollment (credentialPolicyName; dpsd enrollment update --issuing-ca NAME)", id.EnrollmentName(), csr.Field)
	}
	ca, err := p.Store.IssuingCA(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, dpserr.BadRequest("%s names issuing CA %q, which this instance no longer has; name an existing one (dpsd issuing-ca list)", id.EnrollmentName(), name)
	}
	if err != nil {
		return nil, dpserr.FromStore(err, dpserr.NoRecord, "")
	}
	var unusable *issuance.UnusableError
	switch err := issuance.Check(ca, p.now()); {
	case errors.As(err, &unusable):
		return nil, dpserr.BadRequest("%s names issuing CA %q, which cannot issue: %v", id.EnrollmentName(), ca.Name, unusable.Err)
	case err != nil:
		return nil, dpserr.Internal(err)
	}
	return &certificateRequest{csr: csr, ca: ca}, nil
}

// jobIssuance is the certificate request of a job: the one the register
// request read before it started the job, or, for a job taken over from
// another run, the CSR the job carries, checked again against the
// enrollment's issuing CA.
func (p *Pipeline) jobIssuance(ctx context.Context, req *Request, id *attest.Identity, s *preread) (*certificateRequest, error) {
	if s != nil {
		return s.cert, nil
	}
	csr, err := issuance.FromBody(req.Body, req.RegistrationID)
	if err != nil {
		return nil, err
	}
	return p.checkIssuance(ctx, id, csr)
}

// sign signs the requested certificate, once: a registration that raced
// another and decides again keeps the certificate it signed.
func (p *Pipeline) sign(cr *certificateRequest, registrationID, groupID string) error {
	if cr.issued != nil {
		return nil
	}
	issued, err := p.Issuer.Issue(cr.ca, cr.csr, registrationID, groupID)
	if err != nil {
		return dpserr.Internal(err)
	}
	cr.issued = issued
	return nil
}

// preIssue signs the requested certificate before a decision calls out,
// unless the decision already failed; nil without a request.
func (p *Pipeline) preIssue(cr *certificateRequest, d *decision) (*issuance.Issued, error) {
	if cr == nil || d.fail != nil {
		return nil, nil
	}
	if err := p.sign(cr, d.regID, d.id.GroupID()); err != nil {
		return nil, err
	}
	return cr.issued, nil
}

// issue signs the requested certificate when rec is assigned, and puts it
// in the record: in its answer (the chain) and in rec.Issued (what the store
// records with it).
func (p *Pipeline) issue(cr *certificateRequest, rec *store.Registration) error {
	if cr == nil || rec.Result.Status != dps.StatusAssigned {
		return nil
	}
	if err := p.sign(cr, rec.Result.RegistrationID, rec.EnrollmentGroupID); err != nil {
		return err
	}
	cr.issued.Deliver(rec.Result)
	rec.Issued = cr.issued.Record
	return nil
}

// logAttrs are the attributes of a registration's log line that name the
// certificate it issued (none when it issued none).
func (cr *certificateRequest) logAttrs(op *store.Operation) []any {
	if cr == nil || cr.issued == nil || op.Status != dps.StatusAssigned {
		return nil
	}
	return []any{"issuedCertificate", cr.issued.Record.SerialNumber, "issuingCA", cr.issued.Record.IssuingCA}
}
