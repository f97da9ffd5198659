// Package limits stands between the device transports (internal/deviceapi,
// internal/mqtt) and the provisioning pipeline, when an operator asks for
// it: throttling like Azure's, honest about it (429, Retry-After, errorCode
// 429001, the rate that was met), and fault injection for firmware tests,
// which Azure cannot do: a chosen fraction of registrations or polls, of the
// whole instance, of one enrollment, or of registration IDs matching a
// pattern, answer 429, 500 or 503, answer late, or lose their connection.
//
// Both transports call the pipeline through a Gate, so both behave the
// same. Rules scoped to an enrollment are applied once the pipeline knows
// the device's enrollment, through its Admitted hook (Faults.Admitted).
package limits

import (
	"context"
	"errors"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/provisioning"
)

// Op is what a device asks.
type Op string

// Operations, named as the pipeline names them.
const (
	Register Op = provisioning.OpRegister
	Poll     Op = provisioning.OpPoll   // operation status
	Status   Op = provisioning.OpLookup // registration status lookup
)

// ErrDrop asks the transport to close the device's connection without an
// answer (an injected fault).
var ErrDrop = errors.New("fault injected: the connection is dropped")

// Provisioner is the pipeline as the device transports call it
// (*provisioning.Pipeline, or a Gate in front of one).
type Provisioner interface {
	Register(ctx context.Context, req provisioning.Request) (*provisioning.Answer, error)
	OperationStatus(ctx context.Context, req provisioning.Request, operationID string) (*provisioning.Answer, error)
	RegistrationStatus(ctx context.Context, req provisioning.Request) (*dps.DeviceRegistrationResult, error)
	// Refused records a refusal the transport makes itself.
	Refused(req *provisioning.Request, op string, err error) error
}

var _ Provisioner = (*provisioning.Pipeline)(nil)

// Gate throttles and injects faults, then calls Next. Nil Throttle and
// Faults do nothing.
type Gate struct {
	Next     Provisioner
	Throttle *Throttle
	Faults   *Faults
}

var _ Provisioner = (*Gate)(nil)

// Register passes a register request.
func (g *Gate) Register(ctx context.Context, req provisioning.Request) (*provisioning.Answer, error) {
	ctx, err := g.before(ctx, Register, req)
	if err != nil {
		return nil, err
	}
	return g.Next.Register(ctx, req)
}

// OperationStatus passes a poll.
func (g *Gate) OperationStatus(ctx context.Context, req provisioning.Request, operationID string) (*provisioning.Answer, error) {
	ctx, err := g.before(ctx, Poll, req)
	if err != nil {
		return nil, err
	}
	return g.Next.OperationStatus(ctx, req, operationID)
}

// RegistrationStatus passes a status lookup; neither throttled nor
// faulted.
func (g *Gate) RegistrationStatus(ctx context.Context, req provisioning.Request) (*dps.DeviceRegistrationResult, error) {
	return g.Next.RegistrationStatus(withOp(ctx, Status), req)
}

// Refused passes a transport's refusal to the pipeline.
func (g *Gate) Refused(req *provisioning.Request, op string, err error) error {
	return g.Next.Refused(req, op, err)
}

// before throttles and injects the faults not scoped to an enrollment.
// What it answers is recorded like the pipeline's refusals, so that the
// refusal journal tells the whole story of a device.
func (g *Gate) before(ctx context.Context, op Op, req provisioning.Request) (context.Context, error) {
	if err := g.Throttle.device(op, req); err != nil {
		return ctx, g.Next.Refused(&req, string(op), err)
	}
	ctx = withOp(ctx, op)
	if err := g.Faults.inject(ctx, op, req, "", ""); err != nil {
		return ctx, g.Next.Refused(&req, string(op), err)
	}
	return ctx, nil
}

type opKey struct{}

// withOp tells the pipeline's hook which operation it admits.
func withOp(ctx context.Context, op Op) context.Context { return context.WithValue(ctx, opKey{}, op) }

func opOf(ctx context.Context) Op {
	op, _ := ctx.Value(opKey{}).(Op)
	return op
}
