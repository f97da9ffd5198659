// Command dpsd-load measures registration throughput of a provisioning
// service (dpsd, or any DPS) with many device identities, one fresh TLS
// connection per registration by default, as a fleet of first-boot devices
// would connect. It also measures the bare TLS handshake rate of the same
// endpoint, the ceiling registration throughput is compared with.
//
//	dpsd-load --login "$(dpsd info -o json | jq -r .serviceConnectionString)" \
//	    --ca-file dpsd-data/server-ca.pem --attestation x509 --devices 2000 --concurrency 16
//
// It creates what it needs through the service API (a symmetric-key group,
// or a root CA uploaded as verified and a group referencing it), so it runs
// against a fresh instance, and it links a hub if none is linked.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dpsd/dpsd/client"
	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/svcclient"
)

type options struct {
	login, caFile, endpoint, idScope string
	attestation                      string
	devices, concurrency             int
	reuse, handshakeOnly             bool
	prefix                           string
	output                           string
}

func main() {
	var o options
	flag.StringVar(&o.login, "login", os.Getenv("DPSD_LOGIN"), "service connection string (DPSD_LOGIN)")
	flag.StringVar(&o.caFile, "ca-file", os.Getenv("DPSD_CA_FILE"), "server CA PEM (DPSD_CA_FILE)")
	flag.StringVar(&o.endpoint, "endpoint", "", "device endpoint host:port (default: the service endpoint)")
	flag.StringVar(&o.idScope, "id-scope", "", "ID scope (default: read from the service's /settings)")
	flag.StringVar(&o.attestation, "attestation", "symmetric-key", "symmetric-key or x509")
	flag.IntVar(&o.devices, "devices", 1000, "registrations to perform, one device identity each")
	flag.IntVar(&o.concurrency, "concurrency", 8, "concurrent devices")
	flag.BoolVar(&o.reuse, "reuse-connections", false, "reuse TLS connections across registrations (symmetric-key only)")
	flag.BoolVar(&o.handshakeOnly, "handshake-only", false, "measure bare TLS handshakes (with a client certificate for x509) and stop")
	flag.StringVar(&o.prefix, "prefix", "", "registration ID prefix (default: random)")
	flag.StringVar(&o.output, "output", "table", "table or json")
	flag.Parse()
	if err := run(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, "dpsd-load: error:", err)
		os.Exit(1)
	}
}

// Result is what one run measured.
type Result struct {
	Mode        string  `json:"mode"`
	Attestation string  `json:"attestation"`
	Devices     int     `json:"devices"`
	Concurrency int     `json:"concurrency"`
	Errors      int64   `json:"errors"`
	Seconds     float64 `json:"seconds"`
	PerSecond   float64 `json:"perSecond"`
	P50ms       float64 `json:"p50ms"`
	P90ms       float64 `json:"p90ms"`
	P99ms       float64 `json:"p99ms"`
	FirstError  string  `json:"firstError,omitempty"`
}

func run(ctx context.Context, o options) error {
	if o.login == "" {
		return errors.New("--login is required (dpsd info prints the service connection string)")
	}
	var ca []byte
	if o.caFile != "" {
		b, err := os.ReadFile(o.caFile)
		if err != nil {
			return err
		}
		ca = b
	}
	svc, err := svcclient.New(o.login, ca)
	if err != nil {
		return err
	}
	if o.endpoint == "" {
		o.endpoint = svc.Host()
	}
	var settings dps.Settings
	if _, err := svc.Do(ctx, svcclient.Request{Method: "GET", Path: "/settings"}, &settings); err != nil {
		return fmt.Errorf("reading /settings: %w", err)
	}
	if o.idScope == "" {
		o.idScope = settings.IDScope
	}
	if o.prefix == "" {
		o.prefix = fmt.Sprintf("load-%d-", time.Now().UnixNano()%1e9)
	}
	if err := ensureHub(ctx, svc); err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if ca != nil {
		roots.AppendCertsFromPEM(ca)
	}
	devs, err := prepare(ctx, svc, o)
	if err != nil {
		return err
	}
	r := measure(ctx, o, devs, roots)
	if o.output == "json" {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	fmt.Printf("%s %s: %d devices, concurrency %d: %.1f/s over %.2fs, p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, errors %d\n",
		r.Mode, r.Attestation, r.Devices, r.Concurrency, r.PerSecond, r.Seconds, r.P50ms, r.P90ms, r.P99ms, r.Errors)
	if r.FirstError != "" {
		fmt.Println("first error:", r.FirstError)
	}
	return nil
}

func ensureHub(ctx context.Context, svc *svcclient.Client) error {
	var hubs dps.LinkedHubList
	if _, err := svc.Do(ctx, svcclient.Request{Method: "GET", Path: "/linkedHubs"}, &hubs); err != nil {
		return err
	}
	if len(hubs.Value) > 0 {
		return nil
	}
	_, err := svc.Do(ctx, svcclient.Request{Method: "PUT", Path: "/linkedHubs/load-hub.azure-devices.net", Body: dps.LinkedHubBody{}}, nil)
	return err
}

// device is one identity: a registration ID and its credential.
type device struct {
	id   string
	key  []byte
	cert *tls.Certificate
}

func prepare(ctx context.Context, svc *svcclient.Client, o options) ([]device, error) {
	devs := make([]device, o.devices)
	switch o.attestation {
	case "symmetric-key":
		groupKey := make([]byte, 32)
		copy(groupKey, o.prefix)
		g := dps.EnrollmentGroup{EnrollmentSettings: dps.EnrollmentSettings{Attestation: &dps.AttestationMechanism{Type: dps.AttestationSymmetricKey, SymmetricKey: &dps.SymmetricKeyAttestation{
			PrimaryKey: base64.StdEncoding.EncodeToString(groupKey), SecondaryKey: base64.StdEncoding.EncodeToString(groupKey)}}}}
		if _, err := svc.Do(ctx, svcclient.Request{Method: "PUT", Path: "/enrollmentGroups/" + o.prefix + "group", Body: g}, nil); err != nil {
			return nil, fmt.Errorf("creating the group: %w", err)
		}
		for i := range devs {
			devs[i].id = fmt.Sprintf("%s%06d", o.prefix, i)
			devs[i].key = client.DeriveKey(groupKey, devs[i].id)
		}
	case "x509":
		root, rootKey, err := pki.NewRootCA(pki.Options{CommonName: o.prefix + "root", Days: 2})
		if err != nil {
			return nil, err
		}
		body := dps.CertificateBody{Certificate: string(pki.EncodePEM(root)), IsVerified: new(true)}
		if _, err := svc.Do(ctx, svcclient.Request{Method: "PUT", Path: "/certificates/" + o.prefix + "root", Body: body}, nil); err != nil {
			return nil, fmt.Errorf("uploading the CA: %w", err)
		}
		g := dps.EnrollmentGroup{EnrollmentSettings: dps.EnrollmentSettings{Attestation: &dps.AttestationMechanism{Type: dps.AttestationX509, X509: &dps.X509Attestation{CAReferences: &dps.X509CAReferences{Primary: o.prefix + "root"}}}}}
		if _, err := svc.Do(ctx, svcclient.Request{Method: "PUT", Path: "/enrollmentGroups/" + o.prefix + "group", Body: g}, nil); err != nil {
			return nil, fmt.Errorf("creating the group: %w", err)
		}
		for i := range devs {
			id := fmt.Sprintf("%s%06d", o.prefix, i)
			leaf, key, err := pki.NewLeaf(pki.Options{CommonName: id, Days: 2}, root, rootKey)
			if err != nil {
				return nil, err
			}
			devs[i] = device{id: id, cert: &tls.Certificate{Certificate: [][]byte{leaf.Raw, root.Raw}, PrivateKey: key, Leaf: leaf}}
		}
	default:
		return nil, fmt.Errorf("--attestation %q: use symmetric-key or x509", o.attestation)
	}
	return devs, nil
}

func measure(ctx context.Context, o options, devs []device, roots *x509.CertPool) Result {
	mode := "register"
	if o.handshakeOnly {
		mode = "handshake"
	}
	r := Result{Mode: mode, Attestation: o.attestation, Devices: len(devs), Concurrency: o.concurrency}
	host, _, _ := net.SplitHostPort(o.endpoint)
	lat := make([]time.Duration, len(devs))
	var next, errs atomic.Int64
	var firstErr atomic.Value
	shared := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: host}, MaxIdleConnsPerHost: o.concurrency}
	start := time.Now()
	var wg sync.WaitGroup
	for range o.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(devs) {
					return
				}
				d := devs[i]
				t0 := time.Now()
				var err error
				if o.handshakeOnly {
					err = handshake(o.endpoint, host, roots, d.cert)
				} else {
					err = register(ctx, o, d, roots, host, shared)
				}
				lat[i] = time.Since(t0)
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	r.Seconds = el.Seconds()
	r.PerSecond = float64(len(devs)) / el.Seconds()
	r.Errors = errs.Load()
	if v, ok := firstErr.Load().(string); ok {
		r.FirstError = v
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	r.P50ms, r.P90ms, r.P99ms = pct(0.50), pct(0.90), pct(0.99)
	return r
}

func register(ctx context.Context, o options, d device, roots *x509.CertPool, host string, shared *http.Transport) error {
	cfg := client.Config{Endpoint: o.endpoint, IDScope: o.idScope, RegistrationID: d.id, RootCAs: roots}
	if d.cert != nil {
		cfg.Certificate = d.cert
	} else {
		cfg.SymmetricKey = d.key
	}
	tr := shared
	if !o.reuse || d.cert != nil {
		tc := &tls.Config{RootCAs: roots, ServerName: host}
		if d.cert != nil {
			tc.Certificates = []tls.Certificate{*d.cert}
		}
		tr = &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}
	}
	cfg.HTTPClient = &http.Client{Transport: tr, Timeout: 30 * time.Second}
	_, err := client.Register(ctx, cfg)
	return err
}

// handshake opens a TLS connection (presenting cert when given), completes
// the handshake and closes it: the per-device cost no registration can avoid.
func handshake(endpoint, host string, roots *x509.CertPool, cert *tls.Certificate) error {
	tc := &tls.Config{RootCAs: roots, ServerName: host}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	c, err := tls.Dial("tcp", endpoint, tc)
	if err != nil {
		return err
	}
	// TLS 1.3 sends the client certificate after the client's Finished: read
	// until the server has processed it (it answers a bad request and closes).
	c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n"))
	io.Copy(io.Discard, c)
	return c.Close()
}
