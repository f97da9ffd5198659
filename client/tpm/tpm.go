// Package tpm gives the device client (github.com/dpsd/dpsd/client) a TPM
// 2.0 for TPM attestation, the way the Azure IoT device SDKs use one: the
// endorsement key (EK) at persistent handle 0x81010001 and the storage root
// key (SRK) at 0x81000001, created with the SDKs' templates when absent; the
// key the provisioning service sends, imported under the SRK and kept at
// 0x81000100; SAS tokens signed inside the TPM with it.
//
//	dev, _ := tpm.Open("/dev/tpmrm0") // or "127.0.0.1:2321", a TPM simulator
//	defer dev.Close()
//	regID, _ := dev.RegistrationID()
//	state, err := client.Register(ctx, client.Config{
//		Endpoint: "dps.example.com:8443", IDScope: "0ne00111111",
//		RegistrationID: regID, TPM: dev,
//	})
//	// the hub key is now in the TPM:
//	sas, _ := dev.HubSASToken(state.AssignedHub, state.DeviceID, time.Now().Add(time.Hour))
//
// It uses github.com/google/go-tpm and needs no cgo.
package tpm

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"

	itpm "github.com/dpsd/dpsd/internal/tpm"
)

// Persistent handles the Azure device SDKs use.
const (
	EKHandle          tpm2.TPMHandle = 0x81010001
	SRKHandle         tpm2.TPMHandle = 0x81000001
	IdentityKeyHandle tpm2.TPMHandle = 0x81000100
)

// maxInputBuffer is the most data one TPM2_HMAC takes (TPM2B_MAX_BUFFER of
// the reference implementation); longer data goes through an HMAC sequence.
const maxInputBuffer = 1024

// ekPolicy is the EK's authorization policy: TPM2_PolicySecret(TPM_RH_ENDORSEMENT).
var ekPolicy = []byte{
	0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24,
	0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa,
}

// EKTemplate returns the template of the EK the Azure device SDKs create
// (the TCG RSA-2048 EK template, with an empty unique field).
func EKTemplate() tpm2.TPMTPublic {
	return storageTemplate(tpm2.TPMAObject{
		FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, AdminWithPolicy: true, Restricted: true, Decrypt: true,
	}, ekPolicy)
}

// SRKTemplate returns the template of the SRK the Azure device SDKs create.
func SRKTemplate() tpm2.TPMTPublic {
	return storageTemplate(tpm2.TPMAObject{
		FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true, NoDA: true, Restricted: true, Decrypt: true,
	}, nil)
}

func storageTemplate(attrs tpm2.TPMAObject, policy []byte) tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:             tpm2.TPMAlgRSA,
		NameAlg:          tpm2.TPMAlgSHA256,
		ObjectAttributes: attrs,
		AuthPolicy:       tpm2.TPM2BDigest{Buffer: policy},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
			Symmetric: tpm2.TPMTSymDefObject{
				Algorithm: tpm2.TPMAlgAES,
				KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(128)),
				Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB),
			},
			KeyBits: 2048,
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{}),
	}
}

// Device is a TPM used for TPM attestation. It implements client.TPM. Its
// methods may be called from several goroutines; each runs its TPM commands
// as one unit.
type Device struct {
	mu     sync.Mutex
	tpm    transport.TPM
	closer func() error
}

// Open opens a TPM: a device file (a path such as /dev/tpmrm0, the kernel's
// resource manager, or /dev/tpm0) or the host:port of a Microsoft TPM
// simulator's command port (its platform port is the next one), as the
// Azure SDKs' simulator mode uses (127.0.0.1:2321).
func Open(path string) (*Device, error) {
	if path == "" {
		return nil, errors.New("no TPM given: a device path such as /dev/tpmrm0, or a simulator's host:port")
	}
	if strings.HasPrefix(path, "/") || strings.HasPrefix(path, ".") || !strings.Contains(path, ":") {
		t, err := linuxtpm.Open(path)
		if err != nil {
			return nil, fmt.Errorf("opening TPM %s: %w", path, err)
		}
		return &Device{tpm: t, closer: t.Close}, nil
	}
	c, err := dialSimulator(path)
	if err != nil {
		return nil, fmt.Errorf("TPM simulator at %s: %w", path, err)
	}
	return &Device{tpm: c, closer: c.Close}, nil
}

// New returns a Device that sends its commands to t (an in-process
// simulator, a TPM opened otherwise). Close does not close t.
func New(t transport.TPM) *Device { return &Device{tpm: t} }

// Close closes a TPM that Open opened.
func (d *Device) Close() error {
	if d.closer == nil {
		return nil
	}
	return d.closer()
}

// EndorsementKey returns the EK's public area (marshalled TPM2B_PUBLIC, the
// bytes the service receives in base64), creating and persisting the EK
// first if the TPM has none at EKHandle.
func (d *Device) EndorsementKey() ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	pub, _, err := d.persistentPrimary(EKHandle, tpm2.TPMRHEndorsement, EKTemplate())
	return pub, err
}

// StorageRootKey is EndorsementKey for the SRK (SRKHandle, owner hierarchy).
func (d *Device) StorageRootKey() ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	pub, _, err := d.persistentPrimary(SRKHandle, tpm2.TPMRHOwner, SRKTemplate())
	return pub, err
}

// RegistrationID returns the registration ID derived from the EK, the one a
// TPM device uses when none is configured.
func (d *Device) RegistrationID() (string, error) {
	ek, err := d.EndorsementKey()
	if err != nil {
		return "", err
	}
	return itpm.RegistrationID(ek), nil
}

// persistentPrimary reads the public area at handle or, if nothing is
// there, creates the primary key from template in hierarchy and persists it
// at handle. It returns the TPM2B_PUBLIC bytes and the Name.
func (d *Device) persistentPrimary(handle, hierarchy tpm2.TPMHandle, template tpm2.TPMTPublic) ([]byte, tpm2.TPM2BName, error) {
	rp, err := (tpm2.ReadPublic{ObjectHandle: handle}).Execute(d.tpm)
	if err == nil {
		return tpm2.Marshal(rp.OutPublic), rp.Name, nil
	}
	if !errors.Is(err, tpm2.TPMRCHandle) {
		return nil, tpm2.TPM2BName{}, fmt.Errorf("reading the key at %#x: %w", uint32(handle), err)
	}
	cp, err := (tpm2.CreatePrimary{PrimaryHandle: hierarchy, InPublic: tpm2.New2B(template)}).Execute(d.tpm)
	if err != nil {
		return nil, tpm2.TPM2BName{}, fmt.Errorf("creating the key for %#x: %w", uint32(handle), err)
	}
	defer d.flush(cp.ObjectHandle)
	_, err = (tpm2.EvictControl{
		Auth:             tpm2.TPMRHOwner,
		ObjectHandle:     &tpm2.NamedHandle{Handle: cp.ObjectHandle, Name: cp.Name},
		PersistentHandle: handle,
	}).Execute(d.tpm)
	if err != nil {
		return nil, tpm2.TPM2BName{}, fmt.Errorf("persisting the key at %#x: %w", uint32(handle), err)
	}
	return tpm2.Marshal(cp.OutPublic), cp.Name, nil
}

func (d *Device) flush(h tpm2.TPMHandle) {
	(tpm2.FlushContext{FlushHandle: h}).Execute(d.tpm)
}

// activation is a parsed activation blob.
type activation struct {
	idObject, secret, duplicate, seed, public []byte
}

// parseActivation splits an activation blob into its TPM2B items (the
// sixth, a TPM2B_DATA, must be present but is not used).
func parseActivation(b []byte) (*activation, error) {
	var items [6][]byte
	for i := range items {
		if len(b) < 2 {
			return nil, fmt.Errorf("the activation blob ends before item %d of 6", i+1)
		}
		n := int(binary.BigEndian.Uint16(b))
		if len(b)-2 < n {
			return nil, fmt.Errorf("item %d of the activation blob says %d bytes, %d are left", i+1, n, len(b)-2)
		}
		items[i], b = b[2:2+n], b[2+n:]
	}
	return &activation{idObject: items[0], secret: items[1], duplicate: items[2], seed: items[3], public: items[4]}, nil
}

// ActivateIdentityKey imports the key of an activation blob (the
// authenticationKey of a TPM challenge or of a registration state):
// TPM2_ActivateCredential with the SRK and the EK recovers the inner wrap
// key, TPM2_Import under the SRK decrypts the key, and the loaded key
// replaces the one at IdentityKeyHandle. It fails unless the blob was made
// for this TPM's EK and SRK.
func (d *Device) ActivateIdentityKey(blob []byte) error {
	a, err := parseActivation(blob)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ekName, err := d.persistentPrimary(EKHandle, tpm2.TPMRHEndorsement, EKTemplate())
	if err != nil {
		return err
	}
	_, srkName, err := d.persistentPrimary(SRKHandle, tpm2.TPMRHOwner, SRKTemplate())
	if err != nil {
		return err
	}
	srk := tpm2.AuthHandle{Handle: SRKHandle, Name: srkName, Auth: tpm2.PasswordAuth(nil)}
	ac, err := (tpm2.ActivateCredential{
		ActivateHandle: srk,
		KeyHandle: tpm2.AuthHandle{Handle: EKHandle, Name: ekName, Auth: tpm2.Policy(tpm2.TPMAlgSHA256, 16,
			func(t transport.TPM, s tpm2.TPMISHPolicy, nonce tpm2.TPM2BNonce) error {
				_, err := (tpm2.PolicySecret{AuthHandle: tpm2.TPMRHEndorsement, PolicySession: s, NonceTPM: nonce}).Execute(t)
				return err
			})},
		CredentialBlob: tpm2.TPM2BIDObject{Buffer: a.idObject},
		Secret:         tpm2.TPM2BEncryptedSecret{Buffer: a.secret},
	}).Execute(d.tpm)
	if err != nil {
		return fmt.Errorf("TPM2_ActivateCredential (is the blob for this TPM's endorsement key?): %w", err)
	}
	inner := ac.CertInfo.Buffer
	pub := tpm2.BytesAs2B[tpm2.TPMTPublic](a.public)
	im, err := (tpm2.Import{
		ParentHandle:  srk,
		EncryptionKey: tpm2.TPM2BData{Buffer: inner},
		ObjectPublic:  pub,
		Duplicate:     tpm2.TPM2BPrivate{Buffer: a.duplicate},
		InSymSeed:     tpm2.TPM2BEncryptedSecret{Buffer: a.seed},
		Symmetric: tpm2.TPMTSymDef{
			Algorithm: tpm2.TPMAlgAES,
			KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(8*len(inner))),
			Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB),
		},
	}).Execute(d.tpm)
	if err != nil {
		return fmt.Errorf("TPM2_Import: %w", err)
	}
	ld, err := (tpm2.Load{ParentHandle: srk, InPrivate: im.OutPrivate, InPublic: pub}).Execute(d.tpm)
	if err != nil {
		return fmt.Errorf("TPM2_Load: %w", err)
	}
	defer d.flush(ld.ObjectHandle)
	if old, err := (tpm2.ReadPublic{ObjectHandle: IdentityKeyHandle}).Execute(d.tpm); err == nil {
		_, err = (tpm2.EvictControl{
			Auth:             tpm2.TPMRHOwner,
			ObjectHandle:     &tpm2.NamedHandle{Handle: IdentityKeyHandle, Name: old.Name},
			PersistentHandle: IdentityKeyHandle,
		}).Execute(d.tpm)
		if err != nil {
			return fmt.Errorf("removing the previous key at %#x: %w", uint32(IdentityKeyHandle), err)
		}
	}
	_, err = (tpm2.EvictControl{
		Auth:             tpm2.TPMRHOwner,
		ObjectHandle:     &tpm2.NamedHandle{Handle: ld.ObjectHandle, Name: ld.Name},
		PersistentHandle: IdentityKeyHandle,
	}).Execute(d.tpm)
	if err != nil {
		return fmt.Errorf("persisting the key at %#x: %w", uint32(IdentityKeyHandle), err)
	}
	return nil
}

// Sign returns the HMAC-SHA256 of data computed by the TPM with the key at
// IdentityKeyHandle (the last one ActivateIdentityKey imported).
func (d *Device) Sign(data []byte) ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	rp, err := (tpm2.ReadPublic{ObjectHandle: IdentityKeyHandle}).Execute(d.tpm)
	if err != nil {
		if errors.Is(err, tpm2.TPMRCHandle) {
			return nil, errors.New("the TPM holds no identity key: register with the provisioning service first")
		}
		return nil, fmt.Errorf("reading the identity key: %w", err)
	}
	key := tpm2.AuthHandle{Handle: IdentityKeyHandle, Name: rp.Name, Auth: tpm2.PasswordAuth(nil)}
	if len(data) <= maxInputBuffer {
		r, err := (tpm2.Hmac{Handle: key, Buffer: tpm2.TPM2BMaxBuffer{Buffer: data}, HashAlg: tpm2.TPMAlgSHA256}).Execute(d.tpm)
		if err != nil {
			return nil, fmt.Errorf("TPM2_HMAC: %w", err)
		}
		return r.OutHMAC.Buffer, nil
	}
	st, err := (tpm2.HmacStart{Handle: key, HashAlg: tpm2.TPMAlgSHA256}).Execute(d.tpm)
	if err != nil {
		return nil, fmt.Errorf("TPM2_HMAC_Start: %w", err)
	}
	seq := tpm2.AuthHandle{Handle: st.SequenceHandle, Auth: tpm2.PasswordAuth(nil)}
	for len(data) > maxInputBuffer {
		if _, err := (tpm2.SequenceUpdate{SequenceHandle: seq, Buffer: tpm2.TPM2BMaxBuffer{Buffer: data[:maxInputBuffer]}}).Execute(d.tpm); err != nil {
			d.flush(st.SequenceHandle)
			return nil, fmt.Errorf("TPM2_SequenceUpdate: %w", err)
		}
		data = data[maxInputBuffer:]
	}
	r, err := (tpm2.SequenceComplete{SequenceHandle: seq, Buffer: tpm2.TPM2BMaxBuffer{Buffer: data}, Hierarchy: tpm2.TPMRHNull}).Execute(d.tpm)
	if err != nil {
		d.flush(st.SequenceHandle)
		return nil, fmt.Errorf("TPM2_SequenceComplete: %w", err)
	}
	return r.Result.Buffer, nil
}

// HubSASToken returns an IoT Hub device SAS token for deviceID on hub (the
// assignedHub and deviceId of the registration state) valid until expiry,
// signed in the TPM with the hub key the registration imported.
func (d *Device) HubSASToken(hub, deviceID string, expiry time.Time) (string, error) {
	sr := url.QueryEscape(hub + "/devices/" + deviceID)
	se := strconv.FormatInt(expiry.Unix(), 10)
	sig, err := d.Sign([]byte(sr + "\n" + se))
	if err != nil {
		return "", err
	}
	return "SharedAccessSignature sr=" + sr + "&sig=" + url.QueryEscape(base64.StdEncoding.EncodeToString(sig)) + "&se=" + se, nil
}
