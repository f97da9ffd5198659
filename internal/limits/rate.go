package limits

import (
	"cmp"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Rate is N requests per period. The zero Rate is no limit.
type Rate struct {
	N   int
	Per time.Duration
}

// ParseRate reads "N/PERIOD": PERIOD is s, min or h, or a duration with
// its number ("5/10s"). "" and "0" are no limit.
func ParseRate(s string) (Rate, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" || s == "off" {
		return Rate{}, nil
	}
	n, per, ok := strings.Cut(s, "/")
	count, err := strconv.Atoi(strings.TrimSpace(n))
	if !ok || err != nil || count < 1 {
		return Rate{}, fmt.Errorf("rate %q is not N/PERIOD with N at least 1 (e.g. 1000/min, 5/10s)", s)
	}
	var d time.Duration
	switch per = strings.TrimSpace(per); per {
	case "s", "sec", "second":
		d = time.Second
	case "m", "min", "minute":
		d = time.Minute
	case "h", "hour":
		d = time.Hour
	default:
		if d, err = time.ParseDuration(per); err != nil || d <= 0 {
			return Rate{}, fmt.Errorf("rate %q: the period %q is not s, min, h or a duration such as 10s", s, per)
		}
	}
	if d > 24*time.Hour {
		return Rate{}, fmt.Errorf("rate %q: the period is longer than a day", s)
	}
	return Rate{N: count, Per: d}, nil
}

// Off reports whether r is no limit.
func (r Rate) Off() bool { return r.N == 0 }

func (r Rate) String() string {
	switch r.Per {
	case 0:
		return "off"
	case time.Second:
		return fmt.Sprintf("%d/s", r.N)
	case time.Minute:
		return fmt.Sprintf("%d/min", r.N)
	case time.Hour:
		return fmt.Sprintf("%d/h", r.N)
	}
	return fmt.Sprintf("%d/%s", r.N, r.Per)
}

// bucket is a token bucket of r: it holds up to N tokens, refilled at N
// per period, so that a burst of N passes and then N per period.
type bucket struct {
	tokens float64
	last   time.Time
}

// take takes a token at now, or says how long until one is there.
func (b *bucket) take(r Rate, now time.Time) (bool, time.Duration) {
	capacity := float64(r.N)
	perSecond := capacity / r.Per.Seconds()
	if b.last.IsZero() {
		b.tokens = capacity
	} else if dt := now.Sub(b.last).Seconds(); dt > 0 {
		b.tokens = math.Min(capacity, b.tokens+dt*perSecond)
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / perSecond * float64(time.Second))
}

// full reports whether b has refilled completely by now: forgetting it
// changes nothing.
func (b *bucket) full(r Rate, now time.Time) bool {
	return now.Sub(b.last) >= r.Per
}

// limiter is one Rate for the whole instance, or one per key.
type limiter struct {
	rate Rate
	mu   sync.Mutex
	one  bucket
	keys map[string]*bucket
	// swept is when the full buckets were last forgotten.
	swept time.Time
	// max overrides maxKeys when positive (tests).
	max int
}

// maxKeys bounds the buckets of a per-key limiter: past it, the full ones
// are forgotten (at most once a period, so that a flood of new keys does
// not scan them all for each), and then, while none is full, any one, so
// that the new key is counted.
const maxKeys = 100_000

func (l *limiter) take(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if key == "" {
		return l.one.take(l.rate, now)
	}
	if l.keys == nil {
		l.keys = map[string]*bucket{}
	}
	b := l.keys[key]
	if b == nil {
		limit := cmp.Or(l.max, maxKeys)
		if len(l.keys) >= limit && now.Sub(l.swept) >= l.rate.Per {
			l.swept = now
			for k, v := range l.keys {
				if v.full(l.rate, now) {
					delete(l.keys, k)
				}
			}
		}
		for k := range l.keys {
			if len(l.keys) < limit {
				break
			}
			delete(l.keys, k)
		}
		b = &bucket{}
		l.keys[key] = b
	}
	return b.take(l.rate, now)
}

// retryAfter is a wait in whole seconds, at least one.
func retryAfter(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}
