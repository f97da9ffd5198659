package limits

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/attest"
	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/provisioning"
)

func TestParseRate(t *testing.T) {
	for in, want := range map[string]string{
		"": "off", "0": "off", "1000/min": "1000/min", "5/10s": "5/10s", "20/s": "20/s", "3/h": "3/h", "7/2m": "7/2m0s",
	} {
		r, err := ParseRate(in)
		if err != nil || r.String() != want {
			t.Errorf("ParseRate(%q) = %v, %v; want %s", in, r, err, want)
		}
	}
	for _, in := range []string{"1000", "x/min", "0/min", "-1/s", "5/fortnight", "5/-1s", "1/48h"} {
		if _, err := ParseRate(in); err == nil {
			t.Errorf("ParseRate(%q) accepted it", in)
		}
	}
}

// TestBucket: a burst of N passes, the next waits for a token, and tokens
// come back at N per period.
func TestBucket(t *testing.T) {
	r := Rate{N: 3, Per: time.Minute}
	var b bucket
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 3 {
		if ok, _ := b.take(r, now); !ok {
			t.Fatalf("request %d of the burst refused", i+1)
		}
	}
	ok, wait := b.take(r, now)
	if ok || wait != 20*time.Second || retryAfter(wait) != 20 {
		t.Fatalf("fourth request: %v, wait %s; want refused, 20 s", ok, wait)
	}
	if ok, _ := b.take(r, now.Add(20*time.Second)); !ok {
		t.Fatal("a token did not come back after 20 s")
	}
	if ok, wait := b.take(r, now.Add(25*time.Second)); ok || retryAfter(wait) != 15 {
		t.Fatalf("after 25 s: %v, wait %s; want refused for 15 s", ok, wait)
	}
	if retryAfter(time.Millisecond) != 1 {
		t.Fatal("a wait below a second is not Retry-After 1")
	}
}

// TestLimiterKeys: past its bound a per-key limiter still counts every new
// key (it forgets another), so a device is throttled however many others
// there are, and the limiter stays within its bound.
func TestLimiterKeys(t *testing.T) {
	l := &limiter{rate: Rate{N: 1, Per: time.Minute}, max: 3}
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		if ok, _ := l.take(k, now); !ok {
			t.Fatalf("the first request of %s refused", k)
		}
		if ok, _ := l.take(k, now); ok {
			t.Fatalf("the second request of %s, within the minute, passed (%d keys kept)", k, len(l.keys))
		}
		if len(l.keys) > 3 {
			t.Fatalf("%d keys kept, bound 3", len(l.keys))
		}
	}
	// A minute on, the full buckets go first.
	if ok, _ := l.take("f", now.Add(time.Minute)); !ok || len(l.keys) != 1 {
		t.Fatalf("after a minute: %v, %d keys; want passed, the full ones forgotten", ok, len(l.keys))
	}
}

// TestThrottle: registrations count for the node, polls for each device;
// the answer is 429 429001 with Retry-After and the rate that was met.
func TestThrottle(t *testing.T) {
	th := NewThrottle(Rate{N: 2, Per: time.Minute}, Rate{N: 1, Per: 10 * time.Second}, Rate{}, nil)
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	th.now = func() time.Time { return now }
	req := func(id string) provisioning.Request {
		return provisioning.Request{RegistrationID: id, Transport: "mqtt"}
	}
	for _, id := range []string{"a", "b"} {
		if err := th.device(Register, req(id)); err != nil {
			t.Fatal(err)
		}
	}
	err := th.device(Register, req("c"))
	var e *dpserr.Error
	if !errors.As(err, &e) || e.Status != http.StatusTooManyRequests || e.Code != dpserr.CodeThrottled || e.RetryAfter != 30 ||
		!strings.Contains(e.Message, "this dpsd accepts 2 registrations per minute (--throttle-registrations 2/min); retry after 30 s") {
		t.Fatalf("third registration: %#v", err)
	}
	if err := th.device(Poll, req("a")); err != nil {
		t.Fatal(err)
	}
	if err := th.device(Poll, req("A")); !errors.As(err, &e) || !strings.Contains(e.Message, "a device may poll its operation 1 times per 10s") {
		t.Fatalf("second poll of a device (its ID in another case): %v", err)
	}
	if err := th.device(Poll, req("b")); err != nil {
		t.Fatalf("another device's poll: %v", err)
	}
	if err := th.device(Status, req("a")); err != nil {
		t.Fatalf("a status lookup is not throttled: %v", err)
	}
	var nilThrottle *Throttle
	if err := nilThrottle.device(Register, req("a")); err != nil {
		t.Fatal(err)
	}
}

func TestParseRule(t *testing.T) {
	for in, want := range map[string]Rule{
		"503":                            {Action: "503"},
		"429,retry-after=1,count=1":      {Action: "429", RetryAfter: 1, Count: 1},
		"delay=5s,enrollment-group=g-1":  {Action: "delay", Delay: "5s", EnrollmentGroup: "g-1"},
		"drop,on=poll,transport=mqtt-ws": {Action: "drop", On: "poll", Transport: "mqtt-ws"},
		"500,fraction=0.25,registration-ids=line3-*,enrollment=dev-1": {Action: "500", Fraction: 0.25, RegistrationIDs: "line3-*", Enrollment: "dev-1"},
	} {
		got, err := ParseRule(in)
		if err != nil || got != want {
			t.Errorf("ParseRule(%q) = %+v, %v; want %+v", in, got, err, want)
			continue
		}
		if back, err := ParseRule(got.String()); err != nil || back != got {
			t.Errorf("%q: String %q does not parse back: %+v, %v", in, got.String(), back, err)
		}
	}
	for in, reason := range map[string]string{
		"":                                    "action",
		"404":                                 `action "404" is not 429, 500, 503, delay=DURATION or drop`,
		"delay=1m":                            "up to 20s",
		"delay=soon":                          "is not a duration",
		"503,fraction=2":                      "fraction 2 is outside 0 to 1",
		"503,on=status":                       `on "status" is not register or poll`,
		"503,transport=amqp":                  "transport",
		"503,registration-ids=[a":             "pattern",
		"503,enrollment=a,enrollment-group=b": "not both",
		"500,retry-after=3":                   "retry-after is for 429 and 503",
		"503,count=-1":                        "negative",
		"503,colour=red":                      `unknown key "colour"`,
		"503,fraction":                        "is not KEY=VALUE",
		"503,count=many":                      "is not a number",
	} {
		if _, err := ParseRule(in); err == nil || !strings.Contains(err.Error(), reason) {
			t.Errorf("ParseRule(%q): %v, want an error saying %q", in, err, reason)
		}
	}
	if _, err := DecodeRuleSet([]byte(`{"rules": [{"action": "503", "percent": 20}]}`)); err == nil || !strings.Contains(err.Error(), "percent") {
		t.Errorf("an unknown member of a rule: %v", err)
	}
	if _, err := DecodeRuleSet([]byte(`{"rules": [{"action": "503"}, {"action": "teapot"}]}`)); err == nil || !strings.Contains(err.Error(), "rule #2") {
		t.Errorf("an invalid second rule: %v", err)
	}
}

// TestFaults: which requests a rule hits (operation, transport, pattern,
// enrollment), its fraction and count, and what each action answers.
func TestFaults(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	mk := func(rules ...string) *Faults {
		var rs []Rule
		for _, s := range rules {
			r, err := ParseRule(s)
			if err != nil {
				t.Fatal(err)
			}
			rs = append(rs, r)
		}
		return NewFaults(rs, nil, log, nil)
	}
	req := func(transport, id string) provisioning.Request {
		return provisioning.Request{Transport: transport, RegistrationID: id}
	}
	ctx := context.Background()
	code := func(err error) int {
		if err == nil {
			return 0
		}
		if errors.Is(err, ErrDrop) {
			return -1
		}
		return dpserr.As(err).Status
	}

	f := mk("503,on=register,transport=mqtt,registration-ids=LINE3-*", "429,on=poll,count=2", "drop,registration-ids=drop-me")
	for _, tc := range []struct {
		op        Op
		transport string
		id        string
		want      int
	}{
		{Register, "mqtt", "line3-007", 503},
		{Register, "https", "line3-007", 0},
		{Register, "mqtt", "line4-007", 0},
		{Poll, "https", "x", 429},
		{Poll, "mqtt", "y", 429},
		{Poll, "mqtt", "z", 0}, // count=2 is spent
		{Register, "https", "drop-me", -1},
		{Status, "https", "drop-me", 0}, // status lookups are never faulted
	} {
		if got := code(f.inject(ctx, tc.op, req(tc.transport, tc.id), "", "")); got != tc.want {
			t.Errorf("%s over %s by %s: %d, want %d", tc.op, tc.transport, tc.id, got, tc.want)
		}
	}
	if d := strings.Join(f.Describe(), "\n"); !strings.Contains(d, "--fault #2: 429,on=poll,count=2 (spent)") {
		t.Errorf("Describe:\n%s", d)
	}

	// Fraction: the roll decides.
	f = mk("500,fraction=0.5")
	rolls := []float64{0.7, 0.2}
	f.roll = func() float64 { r := rolls[0]; rolls = rolls[1:]; return r }
	if code(f.inject(ctx, Register, req("https", "a"), "", "")) != 0 || code(f.inject(ctx, Register, req("https", "a"), "", "")) != 500 {
		t.Error("a roll of 0.7 faulted, or one of 0.2 did not, at fraction 0.5")
	}

	// Enrollment-scoped rules wait for the pipeline's hook.
	f = mk("503,enrollment-group=grp-a", "500,enrollment=dev-1")
	if err := f.inject(ctx, Register, req("https", "dev-1"), "", ""); err != nil {
		t.Errorf("a scoped rule hit before the enrollment was known: %v", err)
	}
	grpA := &attest.Identity{Group: &dps.EnrollmentGroup{EnrollmentGroupID: "GRP-A"}}
	grpB := &attest.Identity{Group: &dps.EnrollmentGroup{EnrollmentGroupID: "grp-b"}}
	dev1 := &attest.Identity{Individual: &dps.IndividualEnrollment{RegistrationID: "dev-1"}}
	dev2 := &attest.Identity{Individual: &dps.IndividualEnrollment{RegistrationID: "dev-2"}}
	r := req("mqtt", "x")
	for _, tc := range []struct {
		id   *attest.Identity
		want int
	}{{grpA, 503}, {grpB, 0}, {dev1, 500}, {dev2, 0}} {
		if got := code(f.Admitted(withOp(ctx, Register), &r, tc.id)); got != tc.want {
			t.Errorf("hook for %s: %d, want %d", tc.id.EnrollmentName(), got, tc.want)
		}
	}
	if err := f.Admitted(ctx, &r, grpA); err != nil {
		t.Errorf("the hook of a request that did not come through a Gate: %v", err)
	}

	// What each action answers.
	for rule, check := range map[string]func(error) bool{
		"429,retry-after=7": func(err error) bool {
			e := dpserr.As(err)
			return e.Status == 429 && e.Code == dpserr.CodeThrottled && e.RetryAfter == 7 && strings.Contains(e.Message, "fault injected on purpose by this dpsd (--fault #1: 429,retry-after=7)")
		},
		"503": func(err error) bool {
			e := dpserr.As(err)
			return e.Status == 503 && e.Code == dpserr.CodeUnavailable && e.RetryAfter == defaultRetryAfter
		},
		"500": func(err error) bool {
			e := dpserr.As(err)
			return e.Status == 500 && strings.Contains(e.Message, "fault injected")
		},
		"delay=1ms":    func(err error) bool { return err == nil },
		"drop,on=poll": func(err error) bool { return errors.Is(err, ErrDrop) },
	} {
		op := Register
		if strings.Contains(rule, "poll") {
			op = Poll
		}
		if err := mk(rule).inject(ctx, op, req("https", "a"), "", ""); !check(err) {
			t.Errorf("%s answered %#v", rule, err)
		}
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := mk("delay=20s").inject(cancelled, Register, req("https", "a"), "", ""); dpserr.As(err).Status != 503 {
		t.Errorf("a delay whose request ended: %v", err)
	}

	// Run-time rules come after the start rules, and replace each other.
	f = mk("503,registration-ids=s-*")
	f.SetRuntime([]Rule{{Action: "500"}}, `"e1"`)
	if code(f.inject(ctx, Register, req("https", "s-1"), "", "")) != 503 || code(f.inject(ctx, Register, req("https", "r-1"), "", "")) != 500 {
		t.Error("start rule first, then the run-time rule")
	}
	f.SetRuntime(nil, "")
	if err := f.inject(ctx, Register, req("https", "r-1"), "", ""); err != nil || len(f.Describe()) != 1 {
		t.Errorf("after the run-time rules were removed: %v, %q", err, f.Describe())
	}
	var none *Faults
	if none.inject(ctx, Register, req("https", "a"), "", "") != nil || none.Describe() != nil || len(none.StartRules()) != 0 {
		t.Error("a nil Faults does something")
	}
}

// FuzzRules feeds fault rules as --fault and the service API take them, and
// rates: a rule that parses prints back to itself, and nothing panics.
func FuzzRules(f *testing.F) {
	f.Add("503,fraction=0.2,on=register", `{"rules": [{"action": "delay", "delay": "1s"}]}`, "1000/min")
	f.Add("delay=5s,enrollment-group=g,count=3", `{"rules": [{"action": "429", "registrationIds": "a[-z]*"}]}`, "5/10s")
	f.Add("drop,registration-ids=[", `{"rules": null}`, "1/0s")
	f.Fuzz(func(t *testing.T, flag, doc, rate string) {
		if r, err := ParseRule(flag); err == nil {
			back, err := ParseRule(r.String())
			if err != nil || back != r {
				t.Fatalf("%q parses to %+v, which prints as %q and parses to %+v, %v", flag, r, r.String(), back, err)
			}
			r.matches(Register, "https", flag)
		}
		if rs, err := DecodeRuleSet([]byte(doc)); err == nil {
			for _, r := range rs.Rules {
				if r.Validate() != nil {
					t.Fatalf("a decoded rule does not validate: %+v", r)
				}
			}
		}
		if r, err := ParseRate(rate); err == nil && !r.Off() {
			var b bucket
			b.take(r, time.Now())
		}
	})
}
