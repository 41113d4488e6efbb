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
		h.ep.mu.Lock()
		failMsg, failed := h.ep.failed["d1"]
		h.ep.mu.Unlock()
		if !failed || !strings.Contains(failMsg, why) {
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
		h.ep.mu.Lock()
		recov := slices.Clone(h.ep.recov)
		h.ep.mu.Unlock()
		if diff := cmp.Diff([]string{"d1"}, recov); diff != "" {
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
		ids := readyInstances(t, h, d, 1)
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
		h.ep.mu.Lock()
		_, failed := h.ep.failed["d1"]
		h.ep.mu.Unlock()
		if failed {
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
