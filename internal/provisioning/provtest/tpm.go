package provtest

import (
	"bytes"
	"context"
	"encoding/base64"
	"time"

	"github.com/google/go-tpm/tpm2"

	clienttpm "github.com/dpsd/dpsd/client/tpm"
	"github.com/dpsd/dpsd/internal/attest"
	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/tpm"
)

// TPM is the public keys of a made-up TPM: an endorsement key and a storage
// root key of the Azure device clients' templates, each with a made-up RSA
// modulus. dpsd can wrap keys to them; nothing can open what it wraps. The
// tests that need a TPM to open the blobs use internal/tpmsim.
type TPM struct {
	EK, SRK []byte // marshalled TPM2B_PUBLIC
}

// NewTPM returns the made-up TPM whose moduli repeat fill (each fill is
// another TPM; the moduli are made odd, as RSA moduli are).
func NewTPM(fill byte) TPM {
	key := func(template tpm2.TPMTPublic, fill byte) []byte {
		n := bytes.Repeat([]byte{fill}, 256)
		n[255] |= 1
		template.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: n})
		return tpm2.Marshal(tpm2.New2B(template))
	}
	return TPM{EK: key(clienttpm.EKTemplate(), fill), SRK: key(clienttpm.SRKTemplate(), fill^0xff)}
}

// Keys is the tpm member of the TPM's register body.
func (k TPM) Keys() *dps.TPMAttestation {
	return &dps.TPMAttestation{EndorsementKey: base64.StdEncoding.EncodeToString(k.EK), StorageRootKey: base64.StdEncoding.EncodeToString(k.SRK)}
}

// RegistrationID is the TPM's default registration ID.
func (k TPM) RegistrationID() string { return tpm.RegistrationID(k.EK) }

// TPMIndividual is a TPM individual enrollment of this endorsement key.
func TPMIndividual(regID string, ek []byte) *dps.IndividualEnrollment {
	return &dps.IndividualEnrollment{RegistrationID: regID, EnrollmentSettings: dps.EnrollmentSettings{
		Attestation: &dps.AttestationMechanism{Type: dps.AttestationTPM, TPM: &dps.TPMAttestation{EndorsementKey: base64.StdEncoding.EncodeToString(ek)}},
	}}
}

// TPMToken is the SAS token of a TPM that activated the challenge issued
// to it (registration ID and EK) at time at, as the Node TPM client makes
// it (sr with %2F, skn=registration), valid until expiry.
func (in Instance) TPMToken(regID string, ek []byte, at, expiry time.Time) string {
	return Token(SRUpper(in.Scope, regID), in.TPMChallengeKey(regID, ek, at), expiry, attest.ChallengeKeyName)
}

// TPMChallengeKey is the key of the challenge issued to a TPM at time at.
func (in Instance) TPMChallengeKey(regID string, ek []byte, at time.Time) []byte {
	in.T.Helper()
	inst, err := in.Store.Instance(context.Background())
	in.must(err, "Instance", "")
	p, err := tpm.ParsePublic(ek)
	in.must(err, "ParsePublic", regID)
	return attest.TPMChallengeKey(inst.TPMChallengeSecret, regID, p, at)
}
