package main

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/dpsd/dpsd/internal/hub"
	"github.com/dpsd/dpsd/internal/outbound"
)

// The example receives what dpsd's own webhook registry sends.
func TestExampleReceivesDpsdEvents(t *testing.T) {
	const secret = "the example's secret, long enough"
	var got []event
	srv := httptest.NewServer(handler([]byte(secret), func(ev event) error { got = append(got, ev); return nil }))
	defer srv.Close()
	c, err := outbound.New(outbound.Options{})
	if err != nil {
		t.Fatal(err)
	}
	send := func(secret string) error {
		reg, err := hub.New(hub.Config{Kind: hub.KindWebhook, Hub: "hub-a", WebhookURL: srv.URL + "/dpsd", WebhookSecret: secret},
			hub.Options{Client: c, Retry: hub.Retry{Attempts: 1}})
		if err != nil {
			t.Fatal(err)
		}
		return reg.Apply(context.Background(), &hub.Assignment{RegistrationID: "reg-1", DeviceID: "dev-1", Auth: hub.CAAuth()})
	}
	if err := send(secret); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Type != "deviceAssigned" || got[0].DeviceID != "dev-1" || got[0].Hub != "hub-a" || got[0].Authentication.Type != "certificateAuthority" {
		t.Fatalf("received %+v", got)
	}
	var he *hub.Error
	if err := send("another secret, as long as it is"); !errors.As(err, &he) || he.Status != http.StatusUnauthorized || len(got) != 1 {
		t.Fatalf("wrong secret: %v, %d events", err, len(got))
	}
}
