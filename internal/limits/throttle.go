package limits

import (
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/httpx"
	"github.com/dpsd/dpsd/internal/metrics"
	"github.com/dpsd/dpsd/internal/provisioning"
)

// Throttle answers 429 (errorCode 429001, with Retry-After) to what goes
// beyond the configured rates, as Azure does at its quotas (1,000
// registrations and 1,000 service operations per minute, 5 polls per device
// every 10 s), but only when asked to and saying which rate was met. Each
// node counts its own requests: behind a load balancer, n nodes accept up to
// n times the rates. Every request counts, authenticated or not.
type Throttle struct {
	registrations, polls, service limiter
	metrics                       *metrics.Metrics
	now                           func() time.Time
}

// NewThrottle returns a Throttle of the rates; m may be nil.
func NewThrottle(registrations, polls, service Rate, m *metrics.Metrics) *Throttle {
	t := &Throttle{metrics: m, now: time.Now}
	t.registrations.rate, t.polls.rate, t.service.rate = registrations, polls, service
	return t
}

// device throttles a device request: register by the instance's rate,
// polls by the device's.
func (t *Throttle) device(op Op, req provisioning.Request) error {
	if t == nil {
		return nil
	}
	var l *limiter
	var key, kind string
	switch op {
	case Register:
		l, kind = &t.registrations, "registrations"
	case Poll:
		l, kind, key = &t.polls, "polls", strings.ToLower(req.RegistrationID)
	default:
		return nil
	}
	if l.rate.Off() {
		return nil
	}
	ok, wait := l.take(key, t.now())
	if ok {
		return nil
	}
	t.count(kind, req.Transport)
	return throttled(kind, l.rate, wait)
}

func (t *Throttle) count(kind, transport string) {
	if t.metrics != nil {
		t.metrics.Throttled.WithLabelValues(kind, transport).Inc()
	}
}

// ServiceAPI throttles the service API: next serves what the rate allows.
// It goes inside httpx.Wrap, which gives the refusal its tracking ID.
func (t *Throttle) ServiceAPI(log *slog.Logger, next http.Handler) http.Handler {
	if t == nil || t.service.rate.Off() {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ok, wait := t.service.take("", t.now()); !ok {
			t.count("service", "https")
			httpx.WriteError(w, r, log, throttled("service", t.service.rate, wait))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// throttled is the answer over a rate.
func throttled(kind string, r Rate, wait time.Duration) *dpserr.Error {
	after := retryAfter(wait)
	var what string
	switch kind {
	case "registrations":
		what = fmt.Sprintf("this dpsd accepts %d registrations %s (--throttle-registrations %s)", r.N, per(r), r)
	case "polls":
		what = fmt.Sprintf("a device may poll its operation %d times %s (--throttle-polls %s)", r.N, per(r), r)
	default:
		what = fmt.Sprintf("this dpsd accepts %d service API requests %s (--throttle-service %s)", r.N, per(r), r)
	}
	return &dpserr.Error{Status: http.StatusTooManyRequests, Code: dpserr.CodeThrottled, RetryAfter: after,
		Message: fmt.Sprintf("throttled: %s; retry after %d s", what, after)}
}

func per(r Rate) string {
	switch r.Per {
	case time.Second:
		return "per second"
	case time.Minute:
		return "per minute"
	case time.Hour:
		return "per hour"
	}
	return "per " + r.Per.String()
}
