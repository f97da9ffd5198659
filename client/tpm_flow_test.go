package client_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/client"
	"github.com/dpsd/dpsd/internal/sas"
)

// scriptedTPM stands in for a TPM in the tests of the protocol: it "imports"
// a blob by taking its bytes as the key. client/tpm's tests run the same
// flow with a real TPM.
type scriptedTPM struct {
	key       []byte
	activated [][]byte
	failSign  bool
}

func (s *scriptedTPM) EndorsementKey() ([]byte, error) { return []byte("ek-public"), nil }
func (s *scriptedTPM) StorageRootKey() ([]byte, error) { return []byte("srk-public"), nil }
func (s *scriptedTPM) ActivateIdentityKey(blob []byte) error {
	if bytes.HasPrefix(blob, []byte("bad")) {
		return errors.New("TPM_RC_INTEGRITY")
	}
	s.activated = append(s.activated, blob)
	s.key = blob
	return nil
}
func (s *scriptedTPM) Sign(data []byte) ([]byte, error) {
	if s.failSign {
		return nil, errors.New("TPM_RC_HANDLE")
	}
	m := hmac.New(sha256.New, s.key)
	m.Write(data)
	return m.Sum(nil), nil
}

var (
	challengeKey = []byte("challenge-key-0123456789abcdef")
	hubKey       = []byte("hub-key-0123456789abcdef")
)

func challenge(keyName string) string {
	return fmt.Sprintf(`{"authenticationKey":%q,"keyName":%q,"message":"TPM challenge"}`, base64.StdEncoding.EncodeToString(challengeKey), keyName)
}

var assignedTPM = `{"operationId":"5.0123456789abcdef.op-1","status":"assigned","registrationState":{"registrationId":"client-dev-01","assignedHub":"hub-1.azure-devices.net","deviceId":"client-dev-01","status":"assigned","substatus":"initialAssignment","tpm":{"authenticationKey":"` + base64.StdEncoding.EncodeToString(hubKey) + `"}}}`

func tpmConfig(f *fake, tp client.TPM) client.Config {
	cfg := f.config()
	cfg.SymmetricKey = nil
	cfg.TPM = tp
	return cfg
}

func TestRegisterTPMChallengeFlow(t *testing.T) {
	t.Parallel()
	f := newFake(t, reply{status: 401, body: challenge("registration")}, reply{status: 202, body: assigning}, reply{status: 200, body: assignedTPM})
	tp := &scriptedTPM{}
	st, _, err := register(t, tpmConfig(f, tp), 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != "assigned" || st.TPM == nil {
		t.Fatalf("state = %+v", st)
	}
	if len(tp.activated) != 2 || !bytes.Equal(tp.activated[0], challengeKey) || !bytes.Equal(tp.activated[1], hubKey) {
		t.Fatalf("activated %q, want the challenge, then the hub key", tp.activated)
	}
	r := f.requests()
	if len(r) != 3 || r[0].method != "PUT" || r[1].method != "PUT" || r[2].method != "GET" {
		t.Fatalf("requests %+v", r)
	}
	if a := r[0].header.Get("Authorization"); a != "" {
		t.Errorf("the first register carries Authorization %q", a)
	}
	var body struct {
		RegistrationID string `json:"registrationId"`
		TPM            struct{ EndorsementKey, StorageRootKey string }
	}
	for _, q := range r[:2] {
		if err := json.Unmarshal([]byte(q.body), &body); err != nil || body.RegistrationID != regID ||
			body.TPM.EndorsementKey != base64.StdEncoding.EncodeToString([]byte("ek-public")) || body.TPM.StorageRootKey != base64.StdEncoding.EncodeToString([]byte("srk-public")) {
			t.Errorf("register body %s", q.body)
		}
	}
	// The retried register and the poll are signed with the challenge's key.
	for _, q := range r[1:] {
		p, err := sas.Parse(q.header.Get("Authorization"))
		if err != nil || !p.Verify(challengeKey) || !p.MatchesDevice(scope, regID) || p.KeyName != "registration" {
			t.Errorf("%s Authorization %q does not verify with the challenge key (%v)", q.method, q.header.Get("Authorization"), err)
		}
	}
}

func TestRegisterTPMUsesTheChallengeKeyName(t *testing.T) {
	t.Parallel()
	f := newFake(t, reply{status: 401, body: challenge("key-1")}, reply{status: 202, body: assignedTPM})
	if _, _, err := register(t, tpmConfig(f, &scriptedTPM{}), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	p, err := sas.Parse(f.requests()[1].header.Get("Authorization"))
	if err != nil || p.KeyName != "key-1" {
		t.Errorf("skn = %+v, %v; want key-1", p, err)
	}
}

func TestRegisterTPMFailures(t *testing.T) {
	t.Parallel()
	assignedNoKey := strings.Replace(assignedTPM, `"tpm":{"authenticationKey"`, `"tpm":{"x"`, 1)
	badBlob := fmt.Sprintf(`{"authenticationKey":%q,"keyName":"registration"}`, base64.StdEncoding.EncodeToString([]byte("bad blob")))
	cases := []struct {
		name   string
		script []reply
		tpm    *scriptedTPM
		want   string
		status int // of a *client.Error
		nReqs  int
	}{
		{"unknown EK", []reply{{status: 404, body: `{"errorCode":404201,"message":"no enrollment for this endorsement key"}`}}, &scriptedTPM{}, "no enrollment", 404, 1},
		{"401 without a challenge", []reply{{status: 401, body: refused}}, &scriptedTPM{}, "expired", 401, 1},
		{"signed register refused", []reply{{status: 401, body: challenge("registration")}, {status: 401, body: challenge("registration")}}, &scriptedTPM{}, "HTTP 401", 401, 2},
		{"challenge the TPM refuses", []reply{{status: 401, body: badBlob}}, &scriptedTPM{}, "importing the service's challenge into the TPM: TPM_RC_INTEGRITY", 0, 1},
		{"TPM cannot sign", []reply{{status: 401, body: challenge("registration")}}, &scriptedTPM{failSign: true}, "signing with the TPM: TPM_RC_HANDLE", 0, 1},
		{"assigned without the hub key", []reply{{status: 401, body: challenge("registration")}, {status: 202, body: assignedNoKey}}, &scriptedTPM{}, "without registrationState.tpm.authenticationKey", 0, 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := newFake(t, c.script...)
			_, _, err := register(t, tpmConfig(f, c.tpm), 10*time.Second)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Register = %v, want an error mentioning %q", err, c.want)
			}
			var ce *client.Error
			if got := errors.As(err, &ce); got != (c.status != 0) || got && ce.StatusCode != c.status {
				t.Errorf("error %T %v, want a *client.Error with status %d: %v", err, err, c.status, got)
			}
			if n := len(f.requests()); n != c.nReqs {
				t.Errorf("%d requests, want %d", n, c.nReqs)
			}
		})
	}
}

func TestRegisterTPMConfig(t *testing.T) {
	_, err := client.Register(context.Background(), client.Config{IDScope: scope, RegistrationID: regID, TPM: &scriptedTPM{}, SymmetricKey: deviceKey})
	if err == nil || !strings.Contains(err.Error(), "exactly one of") {
		t.Errorf("TPM and key: %v", err)
	}
}
