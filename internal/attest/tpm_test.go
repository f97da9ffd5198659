package attest_test

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/attest"
	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/provisioning/provtest"
)

// TestTPMChallengeKeyLifetime moves the clock around the periods of the
// TPM challenge keys: a key is accepted in the hour it was issued in and
// the next, and in the hour before (a node whose clock runs behind) from
// five minutes before it starts; later it is refused as expired, with when;
// a key of another device, or of the device's former TPM, is not its key.
func TestTPMChallengeKeyLifetime(t *testing.T) {
	e := newEnv(t)
	dev, other := provtest.NewTPM(0x51), provtest.NewTPM(0x52)
	e.PutIndividual(provtest.TPMIndividual("tpm-dev", dev.EK))
	e.PutIndividual(provtest.TPMIndividual("tpm-other", other.EK))
	p := time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC) // a period starts
	const (
		notSigned = `the SAS token is not signed with the key of a TPM challenge issued to registration "tpm-dev" in the last 2h0m0s`
		expired   = `the SAS token is signed with the key of a TPM challenge issued to registration "tpm-dev" between 2026-03-04T10:00:00Z and 2026-03-04T11:00:00Z, which expired at 2026-03-04T12:00:00Z`
	)
	for name, c := range map[string]struct {
		regID  string // whose key signs; "tpm-dev" signs for itself
		ek     []byte
		issued time.Time
		at     time.Time
		reason string // "" for accepted
	}{
		"ok/same-second":                      {issued: p, at: p},
		"ok/last-second-of-the-period":        {issued: p, at: p.Add(time.Hour - time.Second)},
		"ok/issued-at-the-end-used-next-hour": {issued: p.Add(time.Hour - time.Second), at: p.Add(time.Hour)},
		"ok/last-second-of-the-next-period":   {issued: p, at: p.Add(2*time.Hour - time.Second)},
		"ok/issued-by-a-node-ahead":           {issued: p.Add(time.Hour), at: p.Add(55 * time.Minute)},
		"ok/registration-id-case":             {regID: "TPM-Dev", issued: p, at: p},
		"fail/expired":                        {issued: p.Add(59 * time.Minute), at: p.Add(2 * time.Hour), reason: expired},
		"fail/expired-a-day-later":            {issued: p, at: p.Add(22 * time.Hour), reason: expired},
		"fail/older-than-a-day":               {issued: p, at: p.Add(30 * time.Hour), reason: notSigned},
		"fail/issued-too-far-ahead":           {issued: p.Add(time.Hour), at: p.Add(54 * time.Minute), reason: notSigned},
		"fail/another-devices-key":            {regID: "tpm-other", ek: other.EK, issued: p, at: p, reason: notSigned},
		"fail/another-tpm-same-registration":  {ek: other.EK, issued: p, at: p, reason: notSigned},
	} {
		t.Run(name, func(t *testing.T) {
			regID, ek := c.regID, c.ek
			if regID == "" {
				regID = "tpm-dev"
			}
			if ek == nil {
				ek = dev.EK
			}
			e.clock = c.at
			tok := provtest.Token(provtest.SRUpper(scope, "tpm-dev"), e.TPMChallengeKey(regID, ek, c.issued), c.at.Add(time.Hour), "registration")
			id, err := e.a.SymmetricKey(context.Background(), scope, "tpm-dev", tok, "")
			if c.reason != "" {
				refused(t, id, err, c.reason)
				return
			}
			if err != nil || id.Mechanism != dps.AttestationTPM || id.Individual.RegistrationID != "tpm-dev" {
				t.Fatalf("identity %+v, error %v; want TPM enrollment tpm-dev", id, err)
			}
		})
	}
}

// TestTPMChallenge: the challenge of an enrolled TPM is the JSON body the
// device clients read (authenticationKey, keyName, nothing else) with a
// six-item activation blob; the EK and SRK are compared and read in any
// base64 form; a challenge writes nothing.
func TestTPMChallenge(t *testing.T) {
	e := newEnv(t)
	dev := provtest.NewTPM(0x61)
	e.PutIndividual(provtest.TPMIndividual(dev.RegistrationID(), dev.EK))
	before, err := e.Store.Counts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	keys := &dps.TPMAttestation{ // URL-safe and unpadded: the same keys
		EndorsementKey: base64.RawURLEncoding.EncodeToString(dev.EK),
		StorageRootKey: base64.RawURLEncoding.EncodeToString(dev.SRK),
	}
	err = e.a.TPMChallenge(context.Background(), dev.RegistrationID(), keys)
	var ch *attest.Challenge
	if !errors.As(err, &ch) {
		t.Fatalf("TPMChallenge: %v, want a challenge", err)
	}
	b, _ := json.Marshal(ch)
	var body map[string]any
	json.Unmarshal(b, &body)
	if len(body) != 2 || body["keyName"] != "registration" {
		t.Errorf("challenge body %s, want authenticationKey and keyName registration only", b)
	}
	blob, err := base64.StdEncoding.DecodeString(ch.AuthenticationKey)
	if err != nil {
		t.Fatal(err)
	}
	items := 0
	for len(blob) >= 2 {
		n := int(binary.BigEndian.Uint16(blob))
		if len(blob) < 2+n {
			break
		}
		blob = blob[2+n:]
		items++
	}
	if items != 6 || len(blob) != 0 {
		t.Errorf("the blob has %d items and %d bytes left, want 6 and none", items, len(blob))
	}
	after, err := e.Store.Counts(context.Background())
	if err != nil || *after != *before {
		t.Errorf("the store changed: %+v, then %+v (%v)", before, after, err)
	}

	// The enrollment's SRK serves a device that sends none.
	withSRK := provtest.TPMIndividual("tpm-srk", dev.EK)
	withSRK.Attestation.TPM.StorageRootKey = base64.StdEncoding.EncodeToString(dev.SRK)
	e.PutIndividual(withSRK)
	if err := e.a.TPMChallenge(context.Background(), "tpm-srk", &dps.TPMAttestation{EndorsementKey: keys.EndorsementKey}); !errors.As(err, &ch) {
		t.Errorf("without a storage root key: %v, want the challenge", err)
	}
	// An enrollment whose EK is no TPM public key explains itself.
	e.PutIndividual(provtest.TPMIndividual("tpm-bad", []byte("not a TPM2B_PUBLIC")))
	err = e.a.TPMChallenge(context.Background(), "tpm-bad", keys)
	var de *dpserr.Error
	if !errors.As(err, &de) || de.Status != http.StatusUnauthorized {
		t.Errorf("enrollment with a bad EK: %v", err)
	} else if want := `the endorsement key of individual enrollment "tpm-bad" is not a TPM public key`; !strings.Contains(de.Message, want) {
		t.Errorf("message %q, want %q", de.Message, want)
	}
}

// TestIssueTPMHubKey: every issue is a fresh primary and secondary key, and
// a blob for the primary; the EK sent must be the enrolled one.
func TestIssueTPMHubKey(t *testing.T) {
	e := newEnv(t)
	dev, other := provtest.NewTPM(0x71), provtest.NewTPM(0x72)
	enr := e.PutIndividual(provtest.TPMIndividual("tpm-dev", dev.EK))
	seen := map[string]bool{}
	for range 2 {
		id := &attest.Identity{Mechanism: dps.AttestationTPM, Individual: enr}
		if err := e.a.IssueTPMHubKey(id, dev.Keys()); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{id.HubKey, id.HubSecondaryKey} {
			if b, err := base64.StdEncoding.DecodeString(k); err != nil || len(b) != 32 || seen[k] {
				t.Errorf("hub key %q: %d bytes, %v, seen before %v", k, len(b), err, seen[k])
			}
			seen[k] = true
		}
		if id.HubKeyBlob == "" || seen[id.HubKeyBlob] {
			t.Errorf("hub key blob %q", id.HubKeyBlob)
		}
		seen[id.HubKeyBlob] = true
	}
	id := &attest.Identity{Mechanism: dps.AttestationTPM, Individual: enr}
	err := e.a.IssueTPMHubKey(id, other.Keys())
	refused(t, nil, err, `the endorsement key the device sent is not the one of individual enrollment "tpm-dev"`)
	if id.HubKey != "" || id.HubKeyBlob != "" {
		t.Errorf("keys issued to another TPM: %+v", id)
	}
}
