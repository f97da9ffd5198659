package tpm_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"

	clienttpm "github.com/dpsd/dpsd/client/tpm"
	"github.com/dpsd/dpsd/internal/tpm"
	"github.com/dpsd/dpsd/internal/tpmsim"
)

// These tests hand activation blobs to Microsoft's reference TPM (the
// simulator): the device side is the TPM's own ActivateCredential, Import,
// Load and HMAC, driven by client/tpm.

func hmacSHA256(key []byte, s string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(s))
	return m.Sum(nil)
}

// provisioned starts a simulator with the EK and SRK the Azure clients
// create, and returns the device and the two public areas as the service
// receives them.
func provisioned(t *testing.T) (*tpmsim.Simulator, *clienttpm.Device, *tpm.Public, *tpm.Public) {
	t.Helper()
	sim, ekBytes, srkBytes := tpmsim.OpenProvisioned(t)
	ek, err := tpm.ParsePublic(ekBytes)
	if err != nil {
		t.Fatalf("the TPM's EK: %v", err)
	}
	srk, err := tpm.ParsePublic(srkBytes)
	if err != nil {
		t.Fatalf("the TPM's SRK: %v", err)
	}
	return sim, clienttpm.New(sim), ek, srk
}

func TestActivationBlobImportsIntoTPM(t *testing.T) {
	_, dev, ek, srk := provisioned(t)
	if got := ek.Algorithm(); got != "RSA-2048" {
		t.Errorf("EK algorithm = %q", got)
	}
	sas := "0ne00111111%2fregistrations%2fdev-01\n1700000000"
	// The challenge key, then the hub key replacing it, as in a registration.
	for i, size := range []int{tpm.KeySize, tpm.MinKeySize, tpm.MaxKeySize} {
		key := tpm.NewKey()
		if size != len(key) {
			key = bytes.Repeat([]byte{byte(i + 1)}, size)
		}
		blob, err := tpm.ActivationBlob(ek, srk, key)
		if err != nil {
			t.Fatal(err)
		}
		if err := dev.ActivateIdentityKey(blob); err != nil {
			t.Fatalf("key of %d bytes: the TPM refused the blob: %v", size, err)
		}
		got, err := dev.Sign([]byte(sas))
		if err != nil {
			t.Fatal(err)
		}
		if want := hmacSHA256(key, sas); !bytes.Equal(got, want) {
			t.Fatalf("key of %d bytes: TPM HMAC = %x, server HMAC = %x", size, got, want)
		}
	}
	// Data longer than one TPM2_HMAC takes goes through a sequence.
	key := tpm.NewKey()
	blob, err := tpm.ActivationBlob(ek, srk, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := dev.ActivateIdentityKey(blob); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", 3000)
	got, err := dev.Sign([]byte(long))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, hmacSHA256(key, long)) {
		t.Fatal("TPM HMAC sequence differs from the server's HMAC")
	}
}

// blobItems splits a blob into its six TPM2B items.
func blobItems(t *testing.T, b []byte) [][]byte {
	t.Helper()
	var items [][]byte
	for len(b) > 0 {
		n := int(binary.BigEndian.Uint16(b))
		items = append(items, b[2:2+n])
		b = b[2+n:]
	}
	if len(items) != 6 {
		t.Fatalf("the blob has %d items, want 6", len(items))
	}
	return items
}

func TestActivationBlobLayout(t *testing.T) {
	_, _, ek, srk := provisioned(t)
	key := tpm.NewKey()
	blob, err := tpm.ActivationBlob(ek, srk, key)
	if err != nil {
		t.Fatal(err)
	}
	items := blobItems(t, blob)
	if len(items[1]) != 256 || len(items[3]) != 256 {
		t.Errorf("encrypted secrets are %d and %d bytes, want 256 (RSA-2048)", len(items[1]), len(items[3]))
	}
	if len(items[5]) != 0 {
		t.Errorf("TPM2B_DATA has %d bytes, want none", len(items[5]))
	}
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](items[4])
	if err != nil {
		t.Fatal(err)
	}
	a := pub.ObjectAttributes
	if pub.Type != tpm2.TPMAlgKeyedHash || pub.NameAlg != tpm2.TPMAlgSHA256 || !a.SignEncrypt || !a.UserWithAuth ||
		a.FixedTPM || a.FixedParent || a.Decrypt || a.Restricted || len(pub.AuthPolicy.Buffer) != 0 {
		t.Errorf("HMAC key public area = %+v", pub)
	}
	d, err := pub.Parameters.KeyedHashDetail()
	if err != nil {
		t.Fatal(err)
	}
	h, err := d.Scheme.Details.HMAC()
	if err != nil || d.Scheme.Scheme != tpm2.TPMAlgHMAC || h.HashAlg != tpm2.TPMAlgSHA256 {
		t.Errorf("HMAC key scheme = %+v", d.Scheme)
	}
}

func TestActivationBlobForAnotherTPMFails(t *testing.T) {
	// Another device: a TPM of its own (fresh seeds), provisioned alike.
	// The simulator is one per process, so the two run one after the other.
	other := tpmsim.Open(t)
	otherEKBytes, otherSRKBytes, err := other.Provision()
	if err != nil {
		t.Fatal(err)
	}
	other.Close()
	otherEK, err := tpm.ParsePublic(otherEKBytes)
	if err != nil {
		t.Fatal(err)
	}
	otherSRK, err := tpm.ParsePublic(otherSRKBytes)
	if err != nil {
		t.Fatal(err)
	}

	_, dev, ek, srk := provisioned(t)
	if ek.Equal(otherEK) {
		t.Fatal("two simulators produced the same EK; the test needs two TPMs")
	}
	key := tpm.NewKey()
	good, err := tpm.ActivationBlob(ek, srk, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := dev.ActivateIdentityKey(good); err != nil {
		t.Fatal(err)
	}
	const probe = "probe"
	cases := []struct {
		name     string
		ek, srk  *tpm.Public
		wantStep string
	}{
		{"blob for another EK", otherEK, srk, "ActivateCredential"},
		{"blob for another EK and SRK", otherEK, otherSRK, "ActivateCredential"},
		{"credential bound to another SRK", ek, otherSRK, "ActivateCredential"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			blob, err := tpm.ActivationBlob(c.ek, c.srk, tpm.NewKey())
			if err != nil {
				t.Fatal(err)
			}
			err = dev.ActivateIdentityKey(blob)
			if err == nil || !strings.Contains(err.Error(), c.wantStep) {
				t.Fatalf("ActivateIdentityKey = %v, want a %s failure", err, c.wantStep)
			}
			var rc tpm2.TPMRC
			if !errors.As(err, &rc) {
				t.Errorf("the error %v carries no TPM response code", err)
			}
			// The key imported before is still the one in use.
			got, err := dev.Sign([]byte(probe))
			if err != nil || !bytes.Equal(got, hmacSHA256(key, probe)) {
				t.Fatalf("after the refused blob the TPM signs with another key (%v)", err)
			}
		})
	}
}

func TestTamperedActivationBlobFails(t *testing.T) {
	_, dev, ek, srk := provisioned(t)
	key := tpm.NewKey()
	blob, err := tpm.ActivationBlob(ek, srk, key)
	if err != nil {
		t.Fatal(err)
	}
	items := blobItems(t, blob)
	for i, c := range []struct {
		name     string
		wantStep string
	}{
		{"credential blob", "ActivateCredential"},
		{"credential secret", "ActivateCredential"},
		{"duplication blob", "Import"},
		{"duplication seed", "Import"},
		{"HMAC key public area", "Import"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var tampered []byte
			for j, item := range items {
				item = bytes.Clone(item)
				if j == i {
					item[len(item)-1] ^= 0x01
				}
				tampered = binary.BigEndian.AppendUint16(tampered, uint16(len(item)))
				tampered = append(tampered, item...)
			}
			err := dev.ActivateIdentityKey(tampered)
			if err == nil || !strings.Contains(err.Error(), c.wantStep) {
				t.Fatalf("ActivateIdentityKey = %v, want a %s failure", err, c.wantStep)
			}
		})
	}
	// The untouched blob still imports: the failures were the tampering.
	if err := dev.ActivateIdentityKey(blob); err != nil {
		t.Fatal(err)
	}
	if got, err := dev.Sign([]byte("x")); err != nil || !bytes.Equal(got, hmacSHA256(key, "x")) {
		t.Fatalf("the TPM does not sign with the key (%v)", err)
	}
}
