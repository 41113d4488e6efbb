package fleet

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/internal/bubbletest"
)

// wantEvents waits until the fleet has reported len(want) events, lets a
// second pass (no event more), and compares them, filling in the
// deployment, owner and instance (when want's is "-") of each.
func (h *harness) wantEvents(deployID, owner, instanceID string, want ...Event) {
	h.t.Helper()
	bubbletest.Eventually(h.t, "the fleet's events", func() bool { return len(h.events.all()) >= len(want) })
	settle(time.Second)
	for i := range want {
		want[i].DeployID, want[i].Owner = deployID, owner
		if want[i].InstanceID == "-" {
			want[i].InstanceID = instanceID
		}
	}
	if d := cmp.Diff(want, h.events.all()); d != "" {
		h.t.Errorf("events (-want +got):\n%s", d)
	}
}

// TestEventsLifecycle: an instance pending, placed, ready and stopped, as
// its owner's feed tells it; the runtime's times where it has them.
func TestEventsLifecycle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDeployment("d1", "alice", "m", 1, 1, 1)
		h := startFleet(t, Config{}, d)
		id := h.waitStarted("d1", 1)[0]
		time.Sleep(time.Until(at(time.Second)))
		h.rt.emit(Instance{ID: id, DeployID: "d1", Phase: PhasePending, Reason: "no free A100-80GB GPU"})
		synctest.Wait()
		// The same reason again, as a runtime may re-report: no new event.
		h.rt.emit(Instance{ID: id, DeployID: "d1", Phase: PhasePending, Reason: "no free A100-80GB GPU"})
		synctest.Wait()
		time.Sleep(time.Until(at(3 * time.Second)))
		ms := h.newModelServer("alice/m", true)
		h.rt.emit(Instance{ID: id, DeployID: "d1", Phase: PhaseRunning, Addr: ms.addr(), Held: at(2500 * time.Millisecond)})
		h.waitRouted("d1", id)
		time.Sleep(time.Until(at(time.Minute)))
		h.store.set() // deleted
		bubbletest.Eventually(t, "the instance stopped", func() bool { return len(h.rt.stopped()) == 1 })
		time.Sleep(time.Until(at(time.Minute + time.Second)))
		h.rt.emit(Instance{ID: id, DeployID: "d1", Phase: PhaseStopped, Released: at(time.Minute + 500*time.Millisecond)})
		h.wantEvents("d1", "alice", id,
			Event{Kind: EventPending, At: at(time.Second), Reason: "no free A100-80GB GPU"},
			Event{Kind: EventPlaced, InstanceID: "-", At: at(2500 * time.Millisecond)},
			Event{Kind: EventReady, InstanceID: "-", At: at(3 * time.Second), ColdStart: 500 * time.Millisecond},
			Event{Kind: EventStopped, InstanceID: "-", At: at(time.Minute + 500*time.Millisecond), Reason: "stopped"},
		)
	})
}

// TestEventsFailures: an instance that fails before it is placed, then one
// that fails after, and the deployment failed after CrashLoopAfter.
func TestEventsFailures(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDeployment("d1", "alice", "m", 1, 1, 1)
		h := startFleet(t, Config{CrashLoopAfter: 2}, d)
		first := h.waitStarted("d1", 1)[0]
		time.Sleep(time.Until(at(time.Second)))
		h.rt.emit(Instance{ID: first, DeployID: "d1", Phase: PhaseFailed, Reason: "Nomad refused the job"})
		second := h.waitStarted("d1", 2)[1] // after a 1s backoff
		time.Sleep(time.Until(at(5 * time.Second)))
		h.rt.emit(Instance{ID: second, DeployID: "d1", Phase: PhaseRunning, Addr: "10.9.9.9:8000", Held: at(4 * time.Second)})
		synctest.Wait()
		time.Sleep(time.Until(at(6 * time.Second)))
		h.rt.emit(Instance{ID: second, DeployID: "d1", Phase: PhaseFailed, Reason: "exit status 1: CUDA out of memory", Released: at(5500 * time.Millisecond)})
		h.wantEvents("d1", "alice", second,
			Event{Kind: EventFailed, InstanceID: first, At: at(time.Second), Reason: "Nomad refused the job"},
			Event{Kind: EventPlaced, InstanceID: "-", At: at(4 * time.Second)},
			Event{Kind: EventFailed, InstanceID: "-", At: at(5500 * time.Millisecond), Reason: "exit status 1: CUDA out of memory"},
			Event{Kind: EventDeploymentFailed, At: at(6 * time.Second), Reason: "exit status 1: CUDA out of memory"},
		)
	})
}

// TestEventsStartTimeout: an instance stopped on the start timeout is
// stopped with that reason, not failed (the fleet asked the stop).
func TestEventsStartTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDeployment("d1", "alice", "m", 1, 1, 1)
		h := startFleet(t, Config{StartTimeout: time.Minute, CrashLoopAfter: 5}, d)
		id := h.waitStarted("d1", 1)[0]
		h.rt.emit(Instance{ID: id, DeployID: "d1", Phase: PhaseRunning, Addr: "10.9.9.9:8000", Held: at(0)})
		settle(time.Minute)
		bubbletest.Eventually(t, "the hung instance stopped", func() bool { return len(h.rt.stopped()) == 1 })
		h.rt.emit(Instance{ID: id, DeployID: "d1", Phase: PhaseFailed, Reason: "killed", Released: at(61 * time.Second)})
		h.waitStarted("d1", 2) // its replacement, not yet placed: no event
		h.wantEvents("d1", "alice", id,
			Event{Kind: EventPlaced, InstanceID: "-", At: at(0)},
			Event{Kind: EventStopped, InstanceID: "-", At: at(61 * time.Second), Reason: "start timeout: not ready within 1m0s"},
		)
	})
}

// TestEventsAdopted: an instance a restarted thaw finds running is placed
// "adopted", and its ready event claims no cold start.
func TestEventsAdopted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDeployment("d1", "alice", "m", 1, 1, 1)
		h := startFleet(t, Config{}, d)
		id := h.waitStarted("d1", 1)[0]
		ms := h.newModelServer("alice/m", true)
		h.rt.emit(Instance{ID: id, DeployID: "d1", Phase: PhaseRunning, Addr: ms.addr(), Held: at(-time.Hour)})
		h.waitRouted("d1", id)
		h.wantEvents("d1", "alice", id,
			Event{Kind: EventPlaced, InstanceID: "-", At: at(-time.Hour), Adopted: true},
			Event{Kind: EventReady, InstanceID: "-", At: at(0), Adopted: true},
		)
	})
}

// TestInstancesAndQuota: Instances lists each instance in its state since
// it entered it, and the instances the GPU quota holds back as pending
// with no ID; the quota's shortfall is one event, not one per tick.
func TestInstancesAndQuota(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDeployment("d1", "alice", "m", 1, 0, 3)
		h := startFleet(t, Config{GPUQuota: 2}, d)
		if got := h.f.Instances("nope"); got != nil {
			t.Errorf("Instances of an unknown deployment = %v, want nil", got)
		}
		h.setDesired(d, 3)
		ids := h.waitStarted("d1", 2)
		settle(0)
		asked := time.Now()
		time.Sleep(time.Second)
		h.rt.emit(Instance{ID: ids[1], DeployID: "d1", Phase: PhasePending, Reason: "no free A100-80GB GPU"})
		synctest.Wait()
		pendingAt := time.Now()
		time.Sleep(time.Second)
		ms := h.newModelServer("alice/m", true)
		h.rt.emit(Instance{ID: ids[0], DeployID: "d1", Phase: PhaseRunning, Addr: ms.addr()})
		h.waitRouted("d1", ids[0])
		readyAt := time.Now()
		settle(5 * time.Second)
		quota := "held back by the GPU quota of user alice (each instance needs 1 A100-80GB)"
		want := []InstanceStatus{
			{ID: "", State: StatePending, Since: asked, Reason: quota},
			{ID: ids[1], State: StatePending, Since: pendingAt, Reason: "no free A100-80GB GPU"},
			{ID: ids[0], State: StateRunning, Since: readyAt, ReadyAt: readyAt},
		}
		if d := cmp.Diff(want, h.f.Instances("d1")); d != "" {
			t.Errorf("instances (-want +got):\n%s", d)
		}
		var pending []Event
		for _, e := range h.events.all() {
			if e.Kind == EventPending {
				pending = append(pending, e)
			}
		}
		if d := cmp.Diff([]Event{{Kind: EventPending, DeployID: "d1", Owner: "alice", At: asked, Reason: quota}}, pending); d != "" {
			t.Errorf("pending events (-want +got):\n%s", d)
		}

		h.setDesired(d, 1) // the quota hold and the pending instance go; the ready one stays
		bubbletest.Eventually(t, "the pending instance stopped", func() bool { return len(h.rt.stopped()) == 1 })
		if d := cmp.Diff(want[2:], h.f.Instances("d1")); d != "" {
			t.Errorf("instances after scaling to 1 (-want +got):\n%s", d)
		}
		h.setDesired(d, 0)
		bubbletest.Eventually(t, "the ready instance draining", func() bool { return len(h.ep.routed("d1")) == 0 })
		drainAt := time.Now()
		settle(time.Second)
		want = []InstanceStatus{{ID: ids[0], State: StateDraining, Since: drainAt, ReadyAt: readyAt}}
		if d := cmp.Diff(want, h.f.Instances("d1")); d != "" {
			t.Errorf("instances draining (-want +got):\n%s", d)
		}
	})
}
