package server

import (
	"reflect"
	"testing"
)

// TestInit: a zero Config gets every default but the two whose zero value
// means something: no MQTT listener, no store retries.
func TestInit(t *testing.T) {
	var got Config
	got.Init()
	want := Defaults()
	want.MQTTAddr, want.StoreRetries = "", 0
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Init of a zero Config:\n got  %+v\n want %+v", got, want)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	if d := Defaults(); d.Validate() != nil {
		t.Errorf("Defaults do not validate: %v", d.Validate())
	}
}
