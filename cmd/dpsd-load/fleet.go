package main

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/dpsd/dpsd/client"
	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/svcclient"
)

// device is one identity: a registration ID and its credential, a
// symmetric key or a certificate chain.
type device struct {
	id   string
	key  []byte
	cert *tls.Certificate
}

// fleet hands out device identities by index.
type fleet struct {
	// n is the number of distinct identities: device i is the one at
	// i mod n. 0 means unlimited (symmetric keys are made on demand).
	n  int
	at func(i int) device
}

func (f *fleet) device(i int) device {
	if f.n > 0 {
		i %= f.n
	}
	return f.at(i)
}

// distinct is how many distinct devices a plan registers at most (0: as
// many as it registers, in duration mode).
func (f *fleet) distinct(p plan) int {
	switch {
	case p.count > 0 && f.n > 0:
		return min(p.count, f.n)
	case p.count > 0:
		return p.count
	}
	return f.n
}

// prepare creates what the devices of a run enroll through — a
// symmetric-key group, or a verified root CA and a group referencing it —
// and returns the devices and a function that deletes what it created.
// pool is the number of X.509 identities to make.
func prepare(ctx context.Context, svc *svcclient.Client, prefix, attestation string, pool int) (*fleet, func(), error) {
	groupID := prefix + "group"
	var created []string
	cleanup := func() {
		for _, path := range created {
			svc.Do(context.Background(), svcclient.Request{Method: "DELETE", Path: path}, nil)
		}
	}
	put := func(path string, body any) error {
		if _, err := svc.Do(ctx, svcclient.Request{Method: "PUT", Path: path, Body: body}, nil); err != nil {
			return err
		}
		created = append([]string{path}, created...) // delete in reverse order
		return nil
	}
	switch attestation {
	case "symmetric-key":
		groupKey := make([]byte, 32)
		rand.Read(groupKey)
		k := base64.StdEncoding.EncodeToString(groupKey)
		g := dps.EnrollmentGroup{EnrollmentSettings: dps.EnrollmentSettings{Attestation: &dps.AttestationMechanism{
			Type: dps.AttestationSymmetricKey, SymmetricKey: &dps.SymmetricKeyAttestation{PrimaryKey: k, SecondaryKey: k}}}}
		if err := put("/enrollmentGroups/"+groupID, g); err != nil {
			return nil, nil, fmt.Errorf("creating the group: %w", err)
		}
		return &fleet{at: func(i int) device {
			id := fmt.Sprintf("%s%07d", prefix, i)
			return device{id: id, key: client.DeriveKey(groupKey, id)}
		}}, cleanup, nil
	case "x509":
		root, rootKey, err := pki.NewRootCA(pki.Options{CommonName: prefix + "root", Days: 2})
		if err != nil {
			return nil, nil, err
		}
		body := dps.CertificateBody{Certificate: string(pki.EncodePEM(root)), IsVerified: new(true)}
		if err := put("/certificates/"+prefix+"root", body); err != nil {
			return nil, nil, fmt.Errorf("uploading the CA: %w", err)
		}
		g := dps.EnrollmentGroup{EnrollmentSettings: dps.EnrollmentSettings{Attestation: &dps.AttestationMechanism{
			Type: dps.AttestationX509, X509: &dps.X509Attestation{CAReferences: &dps.X509CAReferences{Primary: prefix + "root"}}}}}
		if err := put("/enrollmentGroups/"+groupID, g); err != nil {
			cleanup()
			return nil, nil, fmt.Errorf("creating the group: %w", err)
		}
		devs, err := issueDevices(pool, func(i int) string { return fmt.Sprintf("%s%07d", prefix, i) }, func(int) (*x509.Certificate, crypto.Signer) { return root, rootKey })
		if err != nil {
			cleanup()
			return nil, nil, err
		}
		return &fleet{n: len(devs), at: func(i int) device { return devs[i] }}, cleanup, nil
	}
	return nil, nil, fmt.Errorf("attestation %q: use symmetric-key or x509", attestation)
}

// issueDevices makes n X.509 devices: a P-256 leaf for the registration ID
// id(i), issued by ca(i), presented with its issuer.
func issueDevices(n int, id func(int) string, ca func(int) (*x509.Certificate, crypto.Signer)) ([]device, error) {
	devs := make([]device, n)
	err := parallel(n, func(i int) error {
		issuer, issuerKey := ca(i)
		leaf, key, err := pki.NewLeaf(pki.Options{CommonName: id(i), Days: 2}, issuer, issuerKey)
		if err != nil {
			return err
		}
		devs[i] = device{id: id(i), cert: &tls.Certificate{Certificate: [][]byte{leaf.Raw, issuer.Raw}, PrivateKey: key, Leaf: leaf}}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("issuing device certificates: %w", err)
	}
	return devs, nil
}

// parallel runs f(0) to f(n-1) on every core (key pairs and certificates:
// ten thousand take a second or two) and returns the first error.
func parallel(n int, f func(i int) error) error {
	errs := make([]error, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for w := range errs {
		wg.Go(func() {
			for i := w; i < n && errs[w] == nil; i += len(errs) {
				errs[w] = f(i)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
