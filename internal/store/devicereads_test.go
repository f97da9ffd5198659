package store

import (
	"context"
	"errors"
	"testing"

	"github.com/dpsd/dpsd/internal/dps"
)

func TestDeviceReads(t *testing.T) {
	if DeviceReadsFrom(context.Background()) != nil {
		t.Fatal("a context without WithDeviceReads has DeviceReads")
	}
	d := DeviceReadsFrom(WithDeviceReads(context.Background()))
	if d == nil || !d.Unused() {
		t.Fatal("WithDeviceReads: no unused DeviceReads")
	}
	if _, ok, _ := d.TakeEnrollment("dev-1"); ok {
		t.Fatal("an enrollment before any read")
	}
	e := &dps.IndividualEnrollment{RegistrationID: "dev-1"}
	d.Set("dev-1", e, nil, nil, ErrNotFound)
	if d.Unused() {
		t.Fatal("Unused after Set")
	}
	if _, ok, _ := d.TakeEnrollment("dev-2"); ok {
		t.Fatal("another device's enrollment")
	}
	if got, ok, err := d.TakeEnrollment("dev-1"); !ok || got != e || err != nil {
		t.Fatalf("TakeEnrollment: %v, %v, %v", got, ok, err)
	}
	if _, ok, _ := d.TakeEnrollment("dev-1"); ok {
		t.Fatal("the enrollment handed out twice")
	}
	if got, ok, err := d.TakeRegistration("dev-1"); !ok || got != nil || !errors.Is(err, ErrNotFound) {
		t.Fatalf("TakeRegistration: %v, %v, %v", got, ok, err)
	}
	if _, ok, _ := d.TakeRegistration("dev-1"); ok {
		t.Fatal("the record handed out twice")
	}
}
