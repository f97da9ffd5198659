package tpm_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/dpsd/dpsd/client"
	clienttpm "github.com/dpsd/dpsd/client/tpm"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/tpm"
	"github.com/dpsd/dpsd/internal/tpm/tpmtest"
	"github.com/dpsd/dpsd/internal/tpmsim"
)

const scope = "0ne00111111"

func fakeDPS(t *testing.T, f *tpmtest.FakeDPS) (endpoint string, roots *x509.CertPool) {
	t.Helper()
	srv := httptest.NewTLSServer(f)
	t.Cleanup(srv.Close)
	roots = x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	return srv.Listener.Addr().String(), roots
}

// registerAndCheck runs the whole TPM flow against the fake service and
// checks that the TPM ends up signing with the hub key the service sent.
func registerAndCheck(t *testing.T, dev *clienttpm.Device, f *tpmtest.FakeDPS) {
	t.Helper()
	endpoint, roots := fakeDPS(t, f)
	regID, err := dev.RegistrationID()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := client.Register(ctx, client.Config{Endpoint: endpoint, IDScope: scope, RegistrationID: regID, TPM: dev, RootCAs: roots})
	if err != nil {
		t.Fatalf("Register: %v (service saw: %q)", err, f.Problems())
	}
	if st.Status != "assigned" || st.AssignedHub != tpmtest.Hub || st.DeviceID != regID {
		t.Errorf("state = %+v", st)
	}
	if p := f.Problems(); len(p) != 0 {
		t.Errorf("the service found problems: %q", p)
	}
	hubKey := f.HubKey(regID)
	if hubKey == nil {
		t.Fatal("the service never assigned the device")
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
	if !p.Verify(hubKey) || p.Resource != tpmtest.Hub+"/devices/"+regID || p.Expiry.Unix() != expiry.Unix() {
		t.Errorf("hub SAS %q does not verify with the hub key", tok)
	}
}

func TestRegisterInProcess(t *testing.T) {
	for _, assigning := range []bool{false, true} {
		sim := tpmsim.Open(t)
		dev := clienttpm.New(sim)
		registerAndCheck(t, dev, &tpmtest.FakeDPS{IDScope: scope, Assigning: assigning})
		sim.Close()
	}
}

// TestRegisterOverSimulatorProtocol opens the TPM by address, as
// `dpsd device register --tpm 127.0.0.1:2321` does, with the EK enrolled.
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
	f := &tpmtest.FakeDPS{IDScope: scope, EndorsementKey: base64.StdEncoding.EncodeToString(ek), Assigning: true}
	registerAndCheck(t, dev, f)
	if rid, _ := dev.RegistrationID(); rid != tpm.RegistrationID(ek) {
		t.Errorf("RegistrationID = %q", rid)
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
