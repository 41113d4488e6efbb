// Package runtest runs a component's Run(ctx) error for the length of a
// test.
package runtest

import (
	"context"
	"sync"
	"testing"
	"time"
)

// Start calls run in a new goroutine with a context that stop cancels. stop
// then waits for run to return, failing the test if it returns an error or
// has not returned within 5s (fake time inside a synctest bubble). stop is
// idempotent and is also called when the test ends.
func Start(t testing.TB, run func(context.Context) error) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Error("Run did not return after its context ended")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}
