package fleet

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/internal/bubbletest"
)

// fact is the Usage fact of kind about instance id of d.
func fact(d deploy.Deployment, id string, kind UsageKind, at time.Time, reason string) Usage {
	return Usage{
		InstanceID: id, DeployID: d.ID, Owner: d.Owner, Model: d.FullName(),
		GPU: d.Config.GPU, NumGPUs: d.Config.NumGPUs, Kind: kind, At: at, Reason: reason,
	}
}

// wantFacts waits until the facts about instance id are want.
func (h *harness) wantFacts(id string, want ...Usage) {
	h.t.Helper()
	bubbletest.Eventually(h.t, "the facts of "+id, func() bool { return len(h.usage.of(id)) >= len(want) })
	settle(time.Second) // no fact more
	if diff := cmp.Diff(want, h.usage.of(id)); diff != "" {
		h.t.Errorf("Usage facts of %s (-want +got):\n%s", id, diff)
	}
}

// TestUsageHeldReadyStopped: an instance the fleet stops (its deployment
// deleted) is billed from the runtime's Held to its Released; it is ready
// at the fleet's clock when its warm-up passed.
func TestUsageHeldReadyStopped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDeployment("d1", "alice", "m", 2, 1, 1)
		h := startFleet(t, Config{}, d)
		id := h.waitStarted("d1", 1)[0]
		settle(time.Second) // a pending instance holds no GPU
		h.rt.emit(Instance{ID: id, DeployID: "d1", Phase: PhasePending, Reason: "no free A100-80GB GPU"})
		settle(time.Second)
		if got := h.usage.of(id); len(got) != 0 {
			t.Fatalf("facts of a pending instance: %+v", got)
		}

		held := time.Now().Add(-3 * time.Second) // the runtime placed it before reporting
		ms := h.newModelServer("alice/m", true)
		reported := time.Now()
		h.rt.emit(Instance{ID: id, DeployID: "d1", Phase: PhaseRunning, Addr: ms.addr(), Held: held})
		h.waitRouted("d1", id)

		settle(time.Minute)
		h.store.set() // deleted: the fleet stops its instance
		bubbletest.Eventually(t, "the instance stopped", func() bool { return len(h.rt.stopped()) == 1 })
		released := time.Now().Add(-time.Second)
		h.rt.emit(Instance{ID: id, DeployID: "d1", Phase: PhaseStopped, Held: held, Released: released})
		h.wantFacts(id,
			fact(d, id, UsageHeld, held, ""),
			fact(d, id, UsageReady, reported, ""),
			fact(d, id, UsageReleased, released, "stopped"))
	})
}

// TestUsageFailed: an instance that fails is released "failed: <the
// runtime's reason>"; without the runtime's times, at the fleet's clock.
func TestUsageFailed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDeployment("d1", "alice", "m", 1, 1, 1)
		h := startFleet(t, Config{}, d)
		id := h.waitStarted("d1", 1)[0]
		running := time.Now()
		h.rt.emit(Instance{ID: id, DeployID: "d1", Phase: PhaseRunning, Addr: "10.9.9.9:8000"})
		settle(10 * time.Second)
		failed := time.Now()
		h.rt.emit(Instance{ID: id, DeployID: "d1", Phase: PhaseFailed, Reason: "exit status 1: CUDA out of memory"})
		h.wantFacts(id,
			fact(d, id, UsageHeld, running, ""),
			fact(d, id, UsageReleased, failed, "failed: exit status 1: CUDA out of memory"))
	})
}

// TestUsageRunningNeverReported: a runtime whose first report of an
// instance is its end, with the time it took the GPUs, bills it.
func TestUsageRunningNeverReported(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDeployment("d1", "alice", "m", 1, 1, 1)
		h := startFleet(t, Config{}, d)
		id := h.waitStarted("d1", 1)[0]
		held, released := time.Now().Add(time.Second), time.Now().Add(2*time.Second)
		settle(5 * time.Second)
		h.rt.emit(Instance{ID: id, DeployID: "d1", Phase: PhaseFailed, Reason: "lost", Held: held, Released: released})
		h.wantFacts(id,
			fact(d, id, UsageHeld, held, ""),
			fact(d, id, UsageReleased, released, "failed: lost"))
	})
}

// TestUsagePendingStopped: an instance stopped before it was placed held
// no GPU: no fact at all.
func TestUsagePendingStopped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDeployment("d1", "alice", "m", 1, 0, 1)
		h := startFleet(t, Config{}, d)
		h.setDesired(d, 1)
		id := h.waitStarted("d1", 1)[0]
		h.rt.emit(Instance{ID: id, DeployID: "d1", Phase: PhasePending, Reason: "no free A100-80GB GPU"})
		h.setDesired(d, 0)
		bubbletest.Eventually(t, "the pending instance stopped", func() bool { return len(h.rt.stopped()) == 1 })
		h.rt.emit(Instance{ID: id, DeployID: "d1", Phase: PhaseStopped})
		h.wantFacts(id)
	})
}

// TestUsageScaleDown: a ready instance that leaves on a scale-down is
// released "stopped" when the runtime frees its GPUs, even when the
// runtime reports the stop as a failure (killed after the stop grace);
// the one that stays is not released.
func TestUsageScaleDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDeployment("d1", "alice", "m", 1, 0, 2)
		h := startFleet(t, Config{}, d)
		h.setDesired(d, 2)
		ready := time.Now()
		ids := readyInstances(t, h, d, 2)
		h.setDesired(d, 1)
		bubbletest.Eventually(t, "one instance out of load balancing", func() bool { return len(h.ep.routed("d1")) == 1 })
		victim := otherThan(ids, firstKey(h.ep.routed("d1")))
		h.ep.drain(victim)
		bubbletest.Eventually(t, "the drained instance stopped", func() bool { return len(h.rt.stopped()) == 1 })
		released := time.Now()
		h.rt.emit(Instance{ID: victim, DeployID: "d1", Phase: PhaseFailed, Reason: "killed", Released: released})
		h.wantFacts(victim,
			fact(d, victim, UsageHeld, ready, ""),
			fact(d, victim, UsageReady, ready, ""),
			fact(d, victim, UsageReleased, released, "stopped"))
		stays := otherThan(ids, victim)
		h.wantFacts(stays,
			fact(d, stays, UsageHeld, ready, ""),
			fact(d, stays, UsageReady, ready, ""))
	})
}

// TestUsageAdoption: after a restart of thaw the runtime re-reports an
// instance it kept running: Held again, with the runtime's original time;
// repeated reports give one Held and one Released.
func TestUsageAdoption(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDeployment("d1", "alice", "m", 1, 1, 1)
		h := startFleet(t, Config{}, d) // a restarted thaw
		id := h.waitStarted("d1", 1)[0]
		before := time.Now().Add(-time.Hour) // held since before the restart
		ms := h.newModelServer("alice/m", true)
		h.rt.emit(Instance{ID: id, DeployID: "d1", Phase: PhaseRunning, Addr: ms.addr(), Held: before})
		adopted := time.Now()
		h.waitRouted("d1", id)
		h.rt.emit(Instance{ID: id, DeployID: "d1", Phase: PhaseRunning, Addr: ms.addr(), Held: before})
		settle(time.Minute)
		released := time.Now()
		h.rt.emit(Instance{ID: id, DeployID: "d1", Phase: PhaseFailed, Reason: "node lost", Held: before, Released: released})
		h.rt.emit(Instance{ID: id, DeployID: "d1", Phase: PhaseStopped, Held: before, Released: released.Add(time.Second)})
		h.wantFacts(id,
			fact(d, id, UsageHeld, before, ""),
			fact(d, id, UsageReady, adopted, ""),
			fact(d, id, UsageReleased, released, "failed: node lost"))
	})
}

func firstKey(m map[string]string) string {
	for k := range m {
		return k
	}
	return ""
}
