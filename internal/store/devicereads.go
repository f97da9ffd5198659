package store

import (
	"context"
	"sync"

	"github.com/dpsd/dpsd/internal/dps"
)

// A device request reads the device's individual enrollment (to attest it)
// and its registration record (to build on its last registration), both by
// its registration ID, one after the other. On a database across a
// connection each read is a round trip, and the round trips, not the
// reads, are most of what they cost; so a request may let the store make
// both reads at once when it is asked for either, and answer the other
// from that read. WithDeviceReads marks such a request; a store that gains
// nothing (SQLite, in process) ignores it.
//
// The other read is handed out once, to the same request: it is then no
// older than the request, as if the request had read it first. A second
// call reads again.

type deviceReadsKey struct{}

// DeviceReads holds the reads a store made together for one request.
type DeviceReads struct {
	mu             sync.Mutex
	registrationID string // "" until the reads are made
	enrollment     deviceRead[*dps.IndividualEnrollment]
	registration   deviceRead[*Registration]
}

// deviceRead is one read's outcome, until it is handed out.
type deviceRead[T any] struct {
	v    T
	err  error // ErrNotFound when there is none
	have bool
}

func (r *deviceRead[T]) take() (v T, ok bool, err error) {
	v, ok, err = r.v, r.have, r.err
	*r = deviceRead[T]{}
	return v, ok, err
}

// WithDeviceReads returns a context whose store calls may read a device's
// enrollment and record together.
func WithDeviceReads(ctx context.Context) context.Context {
	return context.WithValue(ctx, deviceReadsKey{}, &DeviceReads{})
}

// DeviceReadsFrom returns the request's DeviceReads, nil without one.
func DeviceReadsFrom(ctx context.Context) *DeviceReads {
	d, _ := ctx.Value(deviceReadsKey{}).(*DeviceReads)
	return d
}

// Unused reports whether the reads have not been made yet, so that a
// store asked for either may make both and Set them.
func (d *DeviceReads) Unused() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.registrationID == ""
}

// Set keeps the reads made together for registrationID: each with its
// value, or its error (ErrNotFound when there is none).
func (d *DeviceReads) Set(registrationID string, e *dps.IndividualEnrollment, eErr error, r *Registration, rErr error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.registrationID = registrationID
	d.enrollment = deviceRead[*dps.IndividualEnrollment]{e, eErr, true}
	d.registration = deviceRead[*Registration]{r, rErr, true}
}

// TakeEnrollment returns the enrollment read for registrationID, once.
func (d *DeviceReads) TakeEnrollment(registrationID string) (*dps.IndividualEnrollment, bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.registrationID != registrationID {
		return nil, false, nil
	}
	return d.enrollment.take()
}

// TakeRegistration returns the record read for registrationID, once.
func (d *DeviceReads) TakeRegistration(registrationID string) (*Registration, bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.registrationID != registrationID {
		return nil, false, nil
	}
	return d.registration.take()
}
