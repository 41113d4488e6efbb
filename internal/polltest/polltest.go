// Package polltest waits on a condition in real time, for tests whose state
// sits behind real sockets or processes, which a testing/synctest bubble
// cannot hold. Inside a bubble, use bubbletest.Eventually.
package polltest

import (
	"testing"
	"time"
)

// Eventually checks cond every interval until it holds, failing the test
// with "timed out waiting for <what>" once timeout has passed.
func Eventually(t testing.TB, timeout, interval time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(interval)
	}
}
