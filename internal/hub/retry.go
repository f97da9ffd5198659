package hub

import (
	"context"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/dpsd/dpsd/internal/outbound"
	"github.com/dpsd/dpsd/internal/wait"
)

// Retry bounds how a call is retried.
type Retry struct {
	// Attempts is the most calls made, the first included (default 4).
	Attempts int
	// Base is the first backoff, doubled at each retry up to Max
	// (defaults 200ms and 5s). Each wait is drawn between half the backoff
	// and the whole, so that retries of many devices spread out.
	Base, Max time.Duration
}

func (r Retry) withDefaults() Retry {
	if r.Attempts <= 0 {
		r.Attempts = 4
	}
	if r.Base <= 0 {
		r.Base = 200 * time.Millisecond
	}
	if r.Max <= 0 {
		r.Max = 5 * time.Second
	}
	return r
}

// wait returns the pause before retry number n (1 for the first retry). A
// Retry-After in seconds from the hub wins, capped at Max.
func (r Retry) wait(n int, retryAfter string) time.Duration {
	if s, err := strconv.Atoi(retryAfter); err == nil && s >= 0 {
		return min(time.Duration(s)*time.Second, r.Max)
	}
	d := r.Base << min(n-1, 16)
	if d <= 0 || d > r.Max {
		d = r.Max
	}
	return d/2 + rand.N(d/2+1)
}

// retryableStatus: the hub is overloaded or failing, not refusing.
func retryableStatus(s int) bool {
	return s >= 500 || s == http.StatusTooManyRequests || s == http.StatusRequestTimeout
}

// do sends the request build returns until it gets a final answer, runs out of attempts, or
// the context would end during the next wait. It returns the last answer
// (of any status) or the last transport error, and how many calls it made.
func do(ctx context.Context, c *outbound.Client, r Retry, build func() *outbound.Request) (*outbound.Response, int, error) {
	for n := 1; ; n++ {
		resp, err := c.Do(ctx, build())
		retry := false
		retryAfter := ""
		if err != nil {
			oe := outbound.AsError(err)
			retry = oe != nil && oe.Retryable()
		} else {
			retry = retryableStatus(resp.Status)
			retryAfter = resp.Header.Get("Retry-After")
		}
		if !retry || n >= r.Attempts || ctx.Err() != nil {
			return resp, n, err
		}
		pause := r.wait(n, retryAfter)
		if d, ok := ctx.Deadline(); ok && time.Until(d) < pause {
			return resp, n, err
		}
		if wait.Sleep(ctx, pause) != nil {
			return resp, n, err
		}
	}
}
