package limits

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dpsd/dpsd/internal/attest"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/metrics"
	"github.com/dpsd/dpsd/internal/provisioning"
	"github.com/dpsd/dpsd/internal/store"
	"github.com/dpsd/dpsd/internal/wait"
)

// Rule is one fault: what happens to which requests. Its flag syntax
// (dpsd serve --fault) is ACTION[,KEY=VALUE]..., e.g.
//
//	503,fraction=0.2,on=register
//	429,retry-after=1,count=1,registration-ids=line3-*
//	delay=5s,enrollment-group=line-3
//	drop,on=poll,transport=mqtt
//
// and the service API's /faults takes it as JSON, with the names of the
// fields below.
type Rule struct {
	// Action is 429, 500 or 503 (the answer), delay (answer late, after
	// Delay) or drop (close the connection without an answer).
	Action string `json:"action"`
	Delay  string `json:"delay,omitempty"` // a duration, up to 20s
	// Fraction of the matching requests the fault hits, above 0 and up to
	// 1; 0 means 1.
	Fraction float64 `json:"fraction,omitempty"`
	// On is register or poll (operation status); "" is both.
	On string `json:"on,omitempty"`
	// Transport is https, mqtt or mqtt-ws; "" is all.
	Transport string `json:"transport,omitempty"`
	// RegistrationIDs is a pattern of registration IDs (* ? [...], as
	// path.Match, case-insensitive); "" is all.
	RegistrationIDs string `json:"registrationIds,omitempty"`
	// Enrollment and EnrollmentGroup limit the fault to the devices of one
	// individual enrollment (its registration ID) or of one enrollment
	// group: requests the pipeline has authenticated.
	Enrollment      string `json:"enrollment,omitempty"`
	EnrollmentGroup string `json:"enrollmentGroup,omitempty"`
	// RetryAfter is the Retry-After of a 429 or 503 (seconds; default 2).
	RetryAfter int `json:"retryAfter,omitempty"`
	// Count stops the rule after so many faults (on each node); 0 never.
	Count int `json:"count,omitempty"`
}

// Limits of a rule.
const (
	maxDelay          = 20 * time.Second // below the transports' 30 s request timeouts
	defaultRetryAfter = 2
)

// RuleSet is the document of the run-time rules (the service API's
// /faults, and the run-time setting SettingName).
type RuleSet struct {
	Rules []Rule `json:"rules"`
}

// SettingName is the run-time setting (store.RuntimeSetting) that holds the
// rules set through the service API.
const SettingName = "faults"

// ParseRule reads the flag syntax of a rule.
func ParseRule(s string) (Rule, error) {
	var r Rule
	parts := strings.Split(strings.TrimSpace(s), ",")
	first := strings.TrimSpace(parts[0])
	if d, ok := strings.CutPrefix(first, "delay="); ok {
		r.Action, r.Delay = "delay", d
	} else {
		r.Action = first
	}
	for _, p := range parts[1:] {
		k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
		if !ok {
			return Rule{}, fmt.Errorf("fault %q: %q is not KEY=VALUE", s, p)
		}
		var err error
		switch k {
		case "fraction":
			r.Fraction, err = strconv.ParseFloat(v, 64)
		case "on":
			r.On = v
		case "transport":
			r.Transport = v
		case "registration-ids":
			r.RegistrationIDs = v
		case "enrollment":
			r.Enrollment = v
		case "enrollment-group":
			r.EnrollmentGroup = v
		case "retry-after":
			r.RetryAfter, err = strconv.Atoi(v)
		case "count":
			r.Count, err = strconv.Atoi(v)
		default:
			return Rule{}, fmt.Errorf("fault %q: unknown key %q (fraction, on, transport, registration-ids, enrollment, enrollment-group, retry-after, count)", s, k)
		}
		if err != nil {
			return Rule{}, fmt.Errorf("fault %q: %s=%q is not a number", s, k, v)
		}
	}
	if err := r.Validate(); err != nil {
		return Rule{}, fmt.Errorf("fault %q: %w", s, err)
	}
	return r, nil
}

// Validate checks a rule.
func (r *Rule) Validate() error {
	switch r.Action {
	case "429", "500", "503", "drop":
		if r.Delay != "" {
			return errors.New("delay is for the action delay")
		}
	case "delay":
		d, err := time.ParseDuration(r.Delay)
		if err != nil || d <= 0 || d > maxDelay {
			return fmt.Errorf("delay %q is not a duration above 0 and up to %s", r.Delay, maxDelay)
		}
	default:
		return fmt.Errorf("action %q is not 429, 500, 503, delay=DURATION or drop", r.Action)
	}
	if r.Fraction < 0 || r.Fraction > 1 {
		return fmt.Errorf("fraction %g is outside 0 to 1", r.Fraction)
	}
	switch r.On {
	case "", string(Register), string(Poll):
	default:
		return fmt.Errorf("on %q is not register or poll", r.On)
	}
	switch r.Transport {
	case "", "https", "mqtt", "mqtt-ws":
	default:
		return fmt.Errorf("transport %q is not https, mqtt or mqtt-ws", r.Transport)
	}
	if len(r.RegistrationIDs) > 128 {
		return errors.New("the registration ID pattern is longer than 128 characters")
	}
	if _, err := path.Match(r.RegistrationIDs, ""); err != nil {
		return fmt.Errorf("registration ID pattern %q: %v", r.RegistrationIDs, err)
	}
	if r.Enrollment != "" && r.EnrollmentGroup != "" {
		return errors.New("a rule names an enrollment or an enrollment group, not both")
	}
	if r.RetryAfter < 0 || r.RetryAfter > 300 {
		return fmt.Errorf("retry-after %d is outside 0 to 300 seconds", r.RetryAfter)
	}
	if r.RetryAfter > 0 && r.Action != "429" && r.Action != "503" {
		return errors.New("retry-after is for 429 and 503")
	}
	if r.Count < 0 {
		return fmt.Errorf("count %d is negative", r.Count)
	}
	return nil
}

// String is the rule in flag syntax.
func (r Rule) String() string {
	parts := []string{r.Action}
	if r.Action == "delay" {
		parts[0] = "delay=" + r.Delay
	}
	add := func(k, v string) {
		if v != "" && v != "0" {
			parts = append(parts, k+"="+v)
		}
	}
	if r.Fraction > 0 && r.Fraction < 1 {
		add("fraction", strconv.FormatFloat(r.Fraction, 'g', -1, 64))
	}
	add("on", r.On)
	add("transport", r.Transport)
	add("registration-ids", r.RegistrationIDs)
	add("enrollment", r.Enrollment)
	add("enrollment-group", r.EnrollmentGroup)
	add("retry-after", strconv.Itoa(r.RetryAfter))
	add("count", strconv.Itoa(r.Count))
	return strings.Join(parts, ",")
}

// scoped reports whether the rule waits for the pipeline to know the
// device's enrollment.
func (r *Rule) scoped() bool { return r.Enrollment != "" || r.EnrollmentGroup != "" }

func (r *Rule) matches(op Op, transport, registrationID string) bool {
	if op != Register && op != Poll || r.On != "" && r.On != string(op) || r.Transport != "" && r.Transport != transport {
		return false
	}
	if r.RegistrationIDs == "" {
		return true
	}
	ok, _ := path.Match(strings.ToLower(r.RegistrationIDs), strings.ToLower(registrationID))
	return ok
}

// Faults injects the faults of its rules: those given at start (--fault,
// this node only) and those set through the service API (stored, so every
// node applies them; Watch reloads them). Its methods do nothing on a nil
// Faults.
type Faults struct {
	store   store.Store
	log     *slog.Logger
	metrics *metrics.Metrics
	roll    func() float64

	mu      sync.Mutex
	start   []*active
	runtime []*active
	etag    string
}

// active is a rule in force, with where it comes from and how often it hit.
type active struct {
	Rule
	source   string
	injected int
}

// NewFaults returns the faults of the start rules; the run-time rules are
// read from st by Load and Watch. m may be nil.
func NewFaults(start []Rule, st store.Store, log *slog.Logger, m *metrics.Metrics) *Faults {
	f := &Faults{store: st, log: log, metrics: m, roll: rand.Float64}
	for i, r := range start {
		f.start = append(f.start, &active{Rule: r, source: fmt.Sprintf("--fault #%d", i+1)})
	}
	return f
}

// StartRules are the rules given at start.
func (f *Faults) StartRules() []Rule {
	if f == nil {
		return []Rule{}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []Rule{}
	for _, a := range f.start {
		out = append(out, a.Rule)
	}
	return out
}

// Describe lists the rules in force, each with its source; empty when
// fault injection is off.
func (f *Faults) Describe() []string {
	if f == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, a := range append(append([]*active{}, f.start...), f.runtime...) {
		s := a.source + ": " + a.String()
		if a.Count > 0 && a.injected >= a.Count {
			s += " (spent)"
		}
		out = append(out, s)
	}
	return out
}

// Load reads the run-time rules from the store now.
func (f *Faults) Load(ctx context.Context) error {
	if f == nil || f.store == nil {
		return nil
	}
	s, err := f.store.RuntimeSetting(ctx, SettingName)
	if errors.Is(err, store.ErrNotFound) {
		f.SetRuntime(nil, "")
		return nil
	}
	if err != nil {
		return err
	}
	f.mu.Lock()
	same := s.Etag == f.etag
	f.mu.Unlock()
	if same {
		return nil
	}
	rs, err := DecodeRuleSet([]byte(s.Doc))
	if err != nil {
		return fmt.Errorf("the stored fault rules: %w", err)
	}
	f.SetRuntime(rs.Rules, s.Etag)
	return nil
}

// Watch reloads the run-time rules every period until ctx ends, so that
// a change made through another node reaches this one.
func (f *Faults) Watch(ctx context.Context, every time.Duration) {
	if f == nil || f.store == nil {
		return
	}
	wait.Every(ctx, every, func() {
		if err := f.Load(ctx); err != nil && ctx.Err() == nil {
			f.log.Warn("reading the fault injection rules", "err", err)
		}
	})
}

// SetRuntime replaces the run-time rules (etag: the stored version), and
// warns: a fault injected in production by accident must not go unseen.
func (f *Faults) SetRuntime(rules []Rule, etag string) {
	if f == nil {
		return
	}
	f.mu.Lock()
	changed := etag != f.etag || len(rules) != len(f.runtime)
	f.runtime, f.etag = nil, etag
	for i, r := range rules {
		f.runtime = append(f.runtime, &active{Rule: r, source: fmt.Sprintf("service API rule #%d", i+1)})
	}
	f.mu.Unlock()
	if !changed {
		return
	}
	if len(rules) == 0 {
		f.log.Warn("fault injection rules of the service API removed", "startRules", len(f.start))
		return
	}
	f.log.Warn("FAULT INJECTION rules set through the service API: devices get failures on purpose", "rules", describeRules(rules))
}

func describeRules(rules []Rule) string {
	s := make([]string, len(rules))
	for i, r := range rules {
		s[i] = r.String()
	}
	return strings.Join(s, "; ")
}

// DecodeRuleSet reads and checks a rule set (JSON).
func DecodeRuleSet(b []byte) (RuleSet, error) {
	var rs RuleSet
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rs); err != nil {
		return RuleSet{}, err
	}
	for i := range rs.Rules {
		if err := rs.Rules[i].Validate(); err != nil {
			return RuleSet{}, fmt.Errorf("rule #%d: %w", i+1, err)
		}
	}
	if rs.Rules == nil {
		rs.Rules = []Rule{}
	}
	return rs, nil
}

// Admitted is the pipeline's hook (provisioning.Pipeline.Admitted): it
// injects the faults of rules scoped to the enrollment the device
// authenticated with.
func (f *Faults) Admitted(ctx context.Context, req *provisioning.Request, id *attest.Identity) error {
	op := opOf(ctx)
	if op == "" {
		return nil
	}
	enrollment, group := "", id.GroupID()
	if id.Individual != nil {
		enrollment = id.Individual.RegistrationID
	}
	return f.inject(ctx, op, *req, enrollment, group)
}

// inject picks the first matching rule that fires (before the pipeline:
// the rules not scoped to an enrollment; in the hook: those scoped to the
// device's) and applies it.
func (f *Faults) inject(ctx context.Context, op Op, req provisioning.Request, enrollment, group string) error {
	if f == nil {
		return nil
	}
	hook := enrollment != "" || group != ""
	f.mu.Lock()
	var hit *active
rules:
	for _, list := range [...][]*active{f.start, f.runtime} {
		for _, a := range list {
			if a.scoped() != hook || !a.matches(op, req.Transport, req.RegistrationID) || a.Count > 0 && a.injected >= a.Count {
				continue
			}
			if hook && !(a.Enrollment != "" && strings.EqualFold(a.Enrollment, enrollment) ||
				a.EnrollmentGroup != "" && strings.EqualFold(a.EnrollmentGroup, group)) {
				continue
			}
			if a.Fraction > 0 && a.Fraction < 1 && f.roll() >= a.Fraction {
				continue
			}
			a.injected++
			hit = a
			break rules
		}
	}
	var r Rule
	var source string
	if hit != nil {
		r, source = hit.Rule, hit.source
	}
	f.mu.Unlock()
	if hit == nil {
		return nil
	}
	if f.metrics != nil {
		f.metrics.FaultsInjected.WithLabelValues(r.Action, string(op), req.Transport).Inc()
	}
	f.log.Info("fault injected", "rule", source, "fault", r.String(), "operation", op, "transport", req.Transport,
		"registrationId", req.RegistrationID, "trackingId", req.TrackingID)
	after := r.RetryAfter
	if after == 0 {
		after = defaultRetryAfter
	}
	why := fmt.Sprintf("fault injected on purpose by this dpsd (%s: %s)", source, r)
	switch r.Action {
	case "429":
		return &dpserr.Error{Status: http.StatusTooManyRequests, Code: dpserr.CodeThrottled, RetryAfter: after,
			Message: why + "; retry after " + strconv.Itoa(after) + " s"}
	case "500":
		return &dpserr.Error{Status: http.StatusInternalServerError, Code: dpserr.CodeInternal, Message: why}
	case "503":
		return &dpserr.Error{Status: http.StatusServiceUnavailable, Code: dpserr.CodeUnavailable, RetryAfter: after,
			Message: why + "; retry after " + strconv.Itoa(after) + " s"}
	case "drop":
		return ErrDrop
	}
	d, _ := time.ParseDuration(r.Delay)
	if err := wait.Sleep(ctx, d); err != nil {
		return dpserr.Unavailable(err)
	}
	return nil
}
