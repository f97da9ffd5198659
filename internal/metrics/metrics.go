// Package metrics defines dpsd's Prometheus metrics on a registry of its own
// (no global state, so tests can run servers side by side).
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/dpsd/dpsd/internal/httpx"
)

// Metrics holds every collector dpsd exports.
type Metrics struct {
	Registry *prometheus.Registry

	HTTPRequests *prometheus.CounterVec   // api, route, code
	HTTPDuration *prometheus.HistogramVec // api, route
	// Registrations counts register requests by transport, attestation
	// mechanism and outcome (assigned, failed, disabled, refused).
	Registrations *prometheus.CounterVec
	// RegistrationDuration times the provisioning pipeline per transport.
	RegistrationDuration *prometheus.HistogramVec
	// Refusals counts authentication refusals by transport and reason class.
	Refusals *prometheus.CounterVec
	// ConnectionsOpen and ConnectionsRefused are each listener's open
	// connections and the connections it closed over a cap (reason
	// "listener" or "source"; internal/connlimit).
	ConnectionsOpen    *prometheus.GaugeVec
	ConnectionsRefused *prometheus.CounterVec
	// Throttled counts requests answered 429 by the configured rates
	// (kind: registrations, polls, service; internal/limits).
	Throttled *prometheus.CounterVec
	// FaultsInjected counts the faults injected on purpose, by action,
	// operation and transport (internal/limits).
	FaultsInjected *prometheus.CounterVec
	// CommitBatch is the number of registration writes each group commit
	// of the store made durable (sqlstore.Options.ObserveBatch).
	CommitBatch prometheus.Histogram
}

// New creates the metrics and registers them with Go and process collectors.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		HTTPRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dpsd_http_requests_total", Help: "HTTP requests by API, route and status code.",
		}, []string{"api", "route", "code"}),
		HTTPDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "dpsd_http_request_duration_seconds", Help: "HTTP request latency by API and route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"api", "route"}),
		Registrations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dpsd_registrations_total", Help: "Device register requests by transport, attestation and outcome.",
		}, []string{"transport", "attestation", "outcome"}),
		RegistrationDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "dpsd_registration_duration_seconds", Help: "Time to decide a register request, by transport.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"transport"}),
		Refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dpsd_device_refusals_total", Help: "Refused device requests by transport and errorCode.",
		}, []string{"transport", "code"}),
		ConnectionsOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dpsd_connections_open", Help: "Open connections by listener (https, service, metrics, mqtt).",
		}, []string{"listener"}),
		ConnectionsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dpsd_connections_refused_total", Help: "Connections closed at accept because a cap was reached, by listener and cap (listener, source).",
		}, []string{"listener", "reason"}),
		Throttled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dpsd_throttled_total", Help: "Requests answered 429 by --throttle-*, by kind (registrations, polls, service) and transport.",
		}, []string{"kind", "transport"}),
		FaultsInjected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dpsd_faults_injected_total", Help: "Faults injected on purpose (--fault, /faults), by action, operation and transport.",
		}, []string{"action", "operation", "transport"}),
		CommitBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "dpsd_store_commit_batch_size", Help: "Registration writes (records and operations) made durable by one store transaction.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128},
		}),
	}
	m.Registry.MustRegister(m.HTTPRequests, m.HTTPDuration, m.Registrations, m.RegistrationDuration, m.Refusals,
		m.ConnectionsOpen, m.ConnectionsRefused, m.Throttled, m.FaultsInjected, m.CommitBatch,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

// Middleware counts and times requests of one API. Handlers name their route
// with httpx.SetRoute; unnamed requests count as "other".
func (m *Metrics) Middleware(api string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		r, route := httpx.WithRouteHolder(r)
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(sw, r)
		name := route()
		if name == "" {
			name = "other"
		}
		m.HTTPRequests.WithLabelValues(api, name, strconv.Itoa(sw.code)).Inc()
		m.HTTPDuration.WithLabelValues(api, name).Observe(time.Since(start).Seconds())
	})
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the underlying writer (the MQTT
// WebSocket upgrade needs to hijack it).
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Sum is the total of every series of a counter or gauge collector (a
// CounterVec summed over its labels), for the console's live rates.
func Sum(c prometheus.Collector) float64 {
	ch := make(chan prometheus.Metric)
	go func() { c.Collect(ch); close(ch) }()
	total := 0.0
	for m := range ch {
		var d dto.Metric
		if m.Write(&d) != nil {
			continue
		}
		switch {
		case d.Counter != nil:
			total += d.Counter.GetValue()
		case d.Gauge != nil:
			total += d.Gauge.GetValue()
		}
	}
	return total
}
