package e2e

import (
	"context"
	"time"
)

// Eventually polls cond every interval until it holds or timeout passes,
// and reports whether it held. cond runs at least once.
func Eventually(timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
}

// EventuallyCtx polls cond every interval until it holds or ctx is done,
// and reports whether it held. cond runs at least once.
func EventuallyCtx(ctx context.Context, interval time.Duration, cond func() bool) bool {
	for !cond() {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(interval):
		}
	}
	return true
}
