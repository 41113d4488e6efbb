// Package bubbletest holds the waits that tests running inside a
// testing/synctest bubble share.
package bubbletest

import (
	"testing"
	"testing/synctest"
	"time"
)

// Step is how much fake time Eventually lets pass between two checks.
const Step = 2 * time.Millisecond

// Eventually waits for cond, failing the test after 3s of fake time. Call
// it inside a synctest bubble: before each check it lets every goroutine of
// the bubble settle (synctest.Wait), and only then lets fake time pass, in
// Step increments.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		synctest.Wait()
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(Step)
	}
}
