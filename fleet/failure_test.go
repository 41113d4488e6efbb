package fleet

import (
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/internal/bubbletest"
)

// TestCrashLoop: instances that fail before ever getting ready mark the
// deployment failed after CrashLoopAfter failures, and the request path is
// told to fail its held requests. An instance getting ready recovers it.
func TestCrashLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDeployment("d1", "alice", "m", 1, 3, 3)
		h := startFleet(t, Config{CrashLoopAfter: 2}, d)
		ids := h.waitStarted("d1", 3)
		const why = "exit status 1: CUDA out of memory"

		h.rt.emit(Instance{ID: ids[0], DeployID: "d1", Phase: PhaseFailed, Reason: why})
		bubbletest.Eventually(t, "first failure seen", func() bool { return strings.Contains(h.live(d).Instances.Reason, "last failure: "+why) })
		if l := h.live(d); l.Status == deploy.StatusFailed {
			t.Errorf("failed after one failure: %+v", l)
		}
		h.rt.emit(Instance{ID: ids[1], DeployID: "d1", Phase: PhaseFailed, Reason: why})
		bubbletest.Eventually(t, "status failed", func() bool { return h.live(d).Status == deploy.StatusFailed })
		l := h.live(d)
		if l.FailReason != why {
			t.Errorf("fail_reason = %q, want %q", l.FailReason, why)
		}
		if l.Instances.Desired != 3 || l.Instances.Running != 0 || l.Instances.Pending != 3 {
			t.Errorf("instances = %+v, want 0 running, 3 pending of 3", l.Instances)
		}
		if failMsg, failed := h.ep.failure("d1"); !failed || !strings.Contains(failMsg, why) {
			t.Errorf("Endpoints.Fail(d1) = %q, %v; want a reason containing %q", failMsg, failed, why)
		}
		// Backoff: no replacement within the first second.
		if n := len(h.rt.started()); n != 3 {
			t.Errorf("%d instances started, want no replacement during the backoff", n)
		}

		ms := h.newModelServer("alice/m", true)
		h.rt.emit(Instance{ID: ids[2], DeployID: "d1", Phase: PhaseRunning, Addr: ms.addr()})
		h.waitRouted("d1", ids[2])
		bubbletest.Eventually(t, "recovered", func() bool { return h.live(d).Status != deploy.StatusFailed })
		l = h.live(d)
		if l.Status != deploy.StatusDeploying || l.FailReason != "" || l.Instances.Running != 1 {
			t.Errorf("after an instance got ready: %+v, want deploying, no fail_reason, 1 running", l)
		}
		if diff := cmp.Diff([]string{"d1"}, h.ep.recovered()); diff != "" {
			t.Errorf("Endpoints.Recover calls (-want +got):\n%s", diff)
		}
		if strings.Contains(l.Instances.Reason, "last failure") {
			t.Errorf("reason still shows the old failure: %q", l.Instances.Reason)
		}
	})
}

// TestReadyInstanceFailureReplaced: a serving instance that dies leaves load
// balancing at once and is replaced without backoff; it does not count
// toward a crash loop.
func TestReadyInstanceFailureReplaced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDeployment("d1", "alice", "m", 1, 1, 1)
		h := startFleet(t, Config{CrashLoopAfter: 1}, d)
		ids := h.readyInstances(d, 1)
		h.rt.emit(Instance{ID: ids[0], DeployID: "d1", Phase: PhaseFailed, Reason: "killed"})
		h.waitRouted("d1")
		start := time.Now()
		h.waitStarted("d1", 2)
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Errorf("replacement started after %s, want at once", d)
		}
		if l := h.live(d); l.Status == deploy.StatusFailed {
			t.Errorf("one failure of a ready instance marked the deployment failed: %+v", l)
		}
		if _, failed := h.ep.failure("d1"); failed {
			t.Error("Endpoints.Fail called for a ready instance's failure")
		}
	})
}

// TestShutdownStopsInstances: when Run returns, every instance is stopped.
func TestShutdownStopsInstances(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDeployment("d1", "alice", "m", 1, 2, 2)
		h := startFleet(t, Config{}, d)
		ids := h.waitStarted("d1", 2)
		h.stop()
		if diff := cmp.Diff(ids, h.rt.stopped()); diff != "" {
			t.Errorf("stopped on shutdown (-want +got):\n%s", diff)
		}
	})
}

// TestStartTimeout: an instance that holds its GPUs for StartTimeout
// without becoming ready is stopped, billed up to then as a start timeout,
// and counts toward the crash loop; after CrashLoopAfter of them the
// deployment is failed with the reason and starts no more instances until
// it is updated.
func TestStartTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const timeout = 10 * time.Minute
		const why = "start timeout: not ready within 10m0s"
		d := newDeployment("d1", "alice", "m", 1, 1, 1)
		h := startFleet(t, Config{StartTimeout: timeout, CrashLoopAfter: 2, ProbeInterval: time.Second}, d)
		loading := h.newModelServer("alice/m", false) // never loads

		// hang reports instance n of d1 running and lets it hang until the
		// fleet stops it; it returns the instance and when it was held.
		hang := func(n int) (string, time.Time) {
			t.Helper()
			id := h.waitStarted("d1", n)[n-1]
			held := time.Now()
			h.rt.emit(Instance{ID: id, DeployID: "d1", Phase: PhaseRunning, Addr: loading.addr(), Held: held})
			settle(timeout - 2*time.Second)
			if l := h.live(d); slices.Contains(h.rt.stopped(), id) || !strings.Contains(l.Instances.Reason, "1 instance(s) starting") {
				t.Fatalf("before the start timeout: stopped %v, live %+v", h.rt.stopped(), l)
			}
			settle(3 * time.Second) // the fleet judges it on its next tick
			if !slices.Contains(h.rt.stopped(), id) {
				t.Fatalf("instance %s not stopped %s after it started running", id, timeout+time.Second)
			}
			return id, held
		}

		first, held := hang(1)
		if l := h.live(d); l.Status != deploy.StatusDeploying || !strings.Contains(l.Instances.Reason, "last failure: "+why) {
			t.Errorf("after one start timeout: %+v, want deploying and the reason %q", l, why)
		}
		// The runtime reports the stop as it sees it (a kill): still one
		// failure, billed as the start timeout.
		released := time.Now()
		h.rt.emit(Instance{ID: first, DeployID: "d1", Phase: PhaseFailed, Reason: "killed", Held: held, Released: released})
		h.wantFacts(first,
			fact(d, first, UsageHeld, held, ""),
			fact(d, first, UsageReleased, released, why))
		if l := h.live(d); l.Status == deploy.StatusFailed {
			t.Fatalf("failed after one start timeout (CrashLoopAfter 2): %+v", l)
		}

		second, _ := hang(2) // the replacement, after the backoff
		h.rt.emit(Instance{ID: second, DeployID: "d1", Phase: PhaseStopped})
		bubbletest.Eventually(t, "status failed", func() bool { return h.live(d).Status == deploy.StatusFailed })
		l := h.live(d)
		if l.FailReason != why || !strings.Contains(l.Instances.Reason, "not retrying after 2 consecutive failures") {
			t.Errorf("failed: %+v, want fail_reason %q and a reason saying it stopped retrying", l, why)
		}
		if failMsg, _ := h.ep.failure("d1"); failMsg != "deployment failed: "+why {
			t.Errorf("Endpoints.Fail(d1) = %q, want the start timeout", failMsg)
		}
		settle(time.Hour)
		if n := len(h.rt.startedFor("d1")); n != 2 {
			t.Fatalf("%d instances started, want no more after the crash loop", n)
		}

		d.UpdatedAt = d.UpdatedAt.Add(time.Hour) // the user updates it
		h.store.set(d)
		h.waitStarted("d1", 3)
		if l := h.live(d); l.Status == deploy.StatusFailed || l.FailReason != "" {
			t.Errorf("after an update: %+v, want retrying, no fail_reason", l)
		}
		if diff := cmp.Diff([]string{"d1"}, h.ep.recovered()); diff != "" {
			t.Errorf("Endpoints.Recover calls (-want +got):\n%s", diff)
		}
	})
}
