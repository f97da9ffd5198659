// Package wait holds the one way dpsd waits: for a while, or until the
// context ends, whichever comes first. Retries and polls use it, so that a
// caller who gives up, or a server that stops, is never kept waiting.
package wait

import (
	"context"
	"time"
)

// Sleep waits for d, or until ctx ends, and then returns ctx.Err().
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Every calls f every period until ctx ends (first after one period).
func Every(ctx context.Context, period time.Duration, f func()) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}
