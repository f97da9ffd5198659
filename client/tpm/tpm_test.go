package tpm_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/dpsd/dpsd/client"
	clienttpm "github.com/dpsd/dpsd/client/tpm"
	"github.com/dpsd/dpsd/internal/hub"
	"github.com/dpsd/dpsd/internal/hub/hubtest"
	"github.com/dpsd/dpsd/internal/provisioning/provtest"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/server"
	"github.com/dpsd/dpsd/internal/server/servertest"
	"github.com/dpsd/dpsd/internal/store"
	"github.com/dpsd/dpsd/internal/tpm"
	"github.com/dpsd/dpsd/internal/tpmsim"
)

// dpsd is a dpsd server in-process, in strict mode or not, with a linked IoT
// hub double whose registry creates the devices it assigns.
type dpsd struct {
	*servertest.Server
	in  provtest.Instance
	hub *hubtest.IoTHub
}

func startDPSD(t *testing.T, strict bool) *dpsd {
	t.Helper()
	ca := hubtest.NewCA(t)
	srv := servertest.Start(t, server.Config{AzureStrict: strict, RetryAfter: 1, OutboundCAFile: ca.File(t)})
	d := &dpsd{Server: srv, in: provtest.Instance{T: t, Store: srv.Store(), Scope: srv.State.IDScope},
		hub: hubtest.NewIoTHub(t, hubtest.IoTHubOptions{Options: hubtest.Options{CA: ca}})}
	if _, err := srv.Store().PutLinkedHub(t.Context(), &store.LinkedHub{Name: d.hub.HostName, ConnectionString: d.hub.ConnectionString(),
		AllocationWeight: 1, ApplyAllocationPolicy: true, DeviceRegistry: string(hub.KindAzureIoTHub)}, ""); err != nil {
		t.Fatal(err)
	}
	return d
}

// registerAndCheck enrolls the TPM's endorsement key under its default
// registration ID, runs the whole TPM flow against dpsd, and checks that
// the TPM signs with the key of the device's identity in the hub.
func registerAndCheck(t *testing.T, dev *clienttpm.Device, d *dpsd) {
	t.Helper()
	ek, err := dev.EndorsementKey()
	if err != nil {
		t.Fatal(err)
	}
	regID, err := dev.RegistrationID()
	if err != nil {
		t.Fatal(err)
	}
	d.in.PutIndividual(provtest.TPMIndividual(regID, ek))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := client.Register(ctx, client.Config{Endpoint: d.DeviceAddr, IDScope: d.in.Scope, RegistrationID: regID, TPM: dev, RootCAs: d.Roots})
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	if st.Status != "assigned" || st.AssignedHub != d.hub.HostName || st.DeviceID != regID {
		t.Errorf("state = %+v", st)
	}
	identity, ok := d.hub.Device(regID)
	if !ok || identity.Auth.Type != "sas" {
		t.Fatalf("the hub's identity of the device: %+v", identity)
	}
	expiry := time.Now().Add(time.Hour)
	tok, err := dev.HubSASToken(st.AssignedHub, st.DeviceID, expiry)
	if err != nil {
		t.Fatal(err)
	}
	p, err := sas.Parse(tok)
	if err != nil {
		t.Fatal(err)
	}
	primary, _ := base64.StdEncoding.DecodeString(identity.Auth.SymmetricKey.PrimaryKey)
	secondary, _ := base64.StdEncoding.DecodeString(identity.Auth.SymmetricKey.SecondaryKey)
	if !p.Verify(primary) || p.Resource != d.hub.HostName+"/devices/"+regID || p.Expiry.Unix() != expiry.Unix() {
		t.Errorf("hub SAS %q does not verify with the primary key of the hub identity", tok)
	}
	if p.Verify(secondary) {
		t.Error("the TPM signs with the secondary key, which no one should hold")
	}
}

func TestRegisterInProcess(t *testing.T) {
	provtest.EachMode(t, func(t *testing.T, mode provtest.Mode) {
		registerAndCheck(t, clienttpm.New(tpmsim.Open(t)), startDPSD(t, mode.Strict))
	})
}

// TestRegisterOverSimulatorProtocol opens the TPM by address, as
// `dpsd device register --tpm 127.0.0.1:2321` does, and registers it twice:
// the second registration gives the TPM, and the hub identity, a new key.
func TestRegisterOverSimulatorProtocol(t *testing.T) {
	sim, ek, _ := tpmsim.OpenProvisioned(t)
	addr := tpmsim.Serve(t, sim)
	dev, err := clienttpm.Open(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	got, err := dev.EndorsementKey()
	if err != nil || !bytes.Equal(got, ek) {
		t.Fatalf("EK over TCP = %x, %v; want the provisioned one", got, err)
	}
	d := startDPSD(t, false)
	registerAndCheck(t, dev, d)
	rid, _ := dev.RegistrationID()
	if rid != tpm.RegistrationID(ek) {
		t.Errorf("RegistrationID = %q", rid)
	}
	first, _ := d.hub.Device(rid)
	registerAndCheck(t, dev, d)
	if again, _ := d.hub.Device(rid); again.Auth.SymmetricKey.PrimaryKey == first.Auth.SymmetricKey.PrimaryKey {
		t.Error("a second registration kept the hub key")
	}
	// A second connection sees the keys the first one left in the TPM.
	dev2, err := clienttpm.Open(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer dev2.Close()
	sig1, err1 := dev.Sign([]byte("x"))
	sig2, err2 := dev2.Sign([]byte("x"))
	if err1 != nil || err2 != nil || !bytes.Equal(sig1, sig2) {
		t.Errorf("the two connections sign differently: %v %v", err1, err2)
	}
}

// TestChallengeMidFlow drives the flow by hand: the TPM activates the first
// challenge; a second challenge arrives before the signed register (a
// retry, another process); the register signed with the first key is
// accepted. (That another TPM cannot activate a TPM's challenge is
// internal/tpm's TestActivationBlobForAnotherTPMFails.)
func TestChallengeMidFlow(t *testing.T) {
	sim, ek, srk := tpmsim.OpenProvisioned(t)
	dev := clienttpm.New(sim)
	regID := tpm.RegistrationID(ek)
	d := startDPSD(t, false)
	d.in.PutIndividual(provtest.TPMIndividual(regID, ek))
	hc := d.HTTPClient(t)
	body, _ := json.Marshal(map[string]any{"registrationId": regID, "tpm": map[string]string{
		"endorsementKey": base64.StdEncoding.EncodeToString(ek), "storageRootKey": base64.StdEncoding.EncodeToString(srk)}})
	register := func(auth string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPut, "https://"+d.DeviceAddr+"/"+d.in.Scope+"/registrations/"+regID+"/register?api-version=2019-03-31", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	status, first := register("")
	blob, _ := base64.StdEncoding.DecodeString(fmt.Sprint(first["authenticationKey"]))
	if status != http.StatusUnauthorized || len(blob) == 0 {
		t.Fatalf("challenge: %d %v", status, first)
	}
	if err := dev.ActivateIdentityKey(blob); err != nil {
		t.Fatal(err)
	}
	if status, _ := register(""); status != http.StatusUnauthorized {
		t.Fatalf("second challenge: %d", status)
	}
	sr := url.QueryEscape(d.in.Scope + "/registrations/" + regID)
	se := strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)
	sig, err := dev.Sign([]byte(sr + "\n" + se))
	if err != nil {
		t.Fatal(err)
	}
	tok := "SharedAccessSignature sr=" + sr + "&sig=" + url.QueryEscape(base64.StdEncoding.EncodeToString(sig)) + "&se=" + se + "&skn=registration"
	if status, op := register(tok); status != http.StatusAccepted || op["status"] != "assigned" {
		t.Fatalf("signed register after a second challenge: %d %v", status, op)
	}
}

// TestKeysAreCreatedOnce: a TPM without EK and SRK gets them, with the Azure
// templates, at the Azure handles; later reads return the same keys.
func TestKeysAreCreatedOnce(t *testing.T) {
	sim := tpmsim.Open(t)
	dev := clienttpm.New(sim)
	for _, h := range []tpm2.TPMHandle{clienttpm.EKHandle, clienttpm.SRKHandle} {
		if _, err := (tpm2.ReadPublic{ObjectHandle: h}).Execute(sim); err == nil {
			t.Fatalf("a fresh TPM already has a key at %#x", h)
		}
	}
	ek1, err := dev.EndorsementKey()
	if err != nil {
		t.Fatal(err)
	}
	srk1, err := dev.StorageRootKey()
	if err != nil {
		t.Fatal(err)
	}
	ek2, _ := clienttpm.New(sim).EndorsementKey()
	srk2, _ := clienttpm.New(sim).StorageRootKey()
	if !bytes.Equal(ek1, ek2) || !bytes.Equal(srk1, srk2) || bytes.Equal(ek1, srk1) {
		t.Fatal("the keys changed between reads")
	}
	for name, c := range map[string]struct {
		pub      []byte
		template tpm2.TPMTPublic
	}{"EK": {ek1, clienttpm.EKTemplate()}, "SRK": {srk1, clienttpm.SRKTemplate()}} {
		p, err := tpm2.Unmarshal[tpm2.TPM2BPublic](c.pub)
		if err != nil {
			t.Fatal(err)
		}
		got, err := p.Contents()
		if err != nil {
			t.Fatal(err)
		}
		if got.ObjectAttributes != c.template.ObjectAttributes || !bytes.Equal(got.AuthPolicy.Buffer, c.template.AuthPolicy.Buffer) {
			t.Errorf("%s attributes %+v, want the template's", name, got.ObjectAttributes)
		}
	}
	if _, err := dev.Sign([]byte("x")); err == nil || !strings.Contains(err.Error(), "no identity key") {
		t.Errorf("Sign before any activation: %v", err)
	}
}

func TestActivateIdentityKeyRefusesShortBlobs(t *testing.T) {
	dev := clienttpm.New(nil) // never reached: the blob is refused first
	for _, b := range [][]byte{nil, {0, 4, 1}, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0}} {
		if err := dev.ActivateIdentityKey(b); err == nil || !strings.Contains(err.Error(), "activation blob") {
			t.Errorf("ActivateIdentityKey(%x) = %v", b, err)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tpm0")
	os.WriteFile(file, nil, 0o600)
	for _, c := range []struct{ path, want string }{
		{"", "no TPM given"},
		{file, "not a device"},
		{"/nonexistent/tpmrm0", "no such file"},
		{"127.0.0.1:1", "TPM simulator at 127.0.0.1:1"},
	} {
		if _, err := clienttpm.Open(c.path); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Open(%q) = %v, want %q", c.path, err, c.want)
		}
	}
}
