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

// epoch is when a synctest bubble's clock starts.
var epoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// at is d after the start of a bubble's clock.
func at(d time.Duration) time.Time { return epoch.Add(d) }

// usageStep is one step of TestUsageFacts at a time of the bubble's clock:
// a runtime report about the instance, or an action (do).
type usageStep struct {
	at     time.Duration
	report Instance // ID, DeployID and Addr are filled in
	serves bool     // a running report's Addr serves the model, else loads forever
	do     func(h *harness)
}

// TestUsageFacts: what the runtime reports of the one instance of a
// deployment, and the facts the fleet gives the meter (Kind, At and Reason;
// the instance's identity is checked too).
func TestUsageFacts(t *testing.T) {
	deleteIt := func(h *harness) { h.store.set() }
	tests := []struct {
		name  string
		steps []usageStep
		want  []Usage
	}{
		{
			name: "held from the runtime's time, ready at the fleet's, released when the fleet's stop ends",
			steps: []usageStep{
				{at: time.Second, report: Instance{Phase: PhasePending, Reason: "no free A100-80GB GPU"}},
				{at: 2 * time.Second, report: Instance{Phase: PhaseRunning, Held: at(1500 * time.Millisecond)}, serves: true},
				{at: time.Minute, do: deleteIt},
				// A runtime may see its own stop as a failure (killed after
				// the grace): the fleet asked it, so it is "stopped".
				{at: time.Minute + time.Second, report: Instance{Phase: PhaseFailed, Reason: "killed", Released: at(time.Minute + 500*time.Millisecond)}},
			},
			want: []Usage{
				{Kind: UsageHeld, At: at(1500 * time.Millisecond)},
				{Kind: UsageReady, At: at(2 * time.Second)},
				{Kind: UsageReleased, At: at(time.Minute + 500*time.Millisecond), Reason: "stopped"},
			},
		},
		{
			name: "failed, without the runtime's times",
			steps: []usageStep{
				{at: time.Second, report: Instance{Phase: PhaseRunning}},
				{at: 11 * time.Second, report: Instance{Phase: PhaseFailed, Reason: "exit status 1: CUDA out of memory"}},
			},
			want: []Usage{
				{Kind: UsageHeld, At: at(time.Second)},
				{Kind: UsageReleased, At: at(11 * time.Second), Reason: "failed: exit status 1: CUDA out of memory"},
			},
		},
		{
			name: "its end the first report, with the time it took the GPUs",
			steps: []usageStep{
				{at: 5 * time.Second, report: Instance{Phase: PhaseFailed, Reason: "lost", Held: at(time.Second), Released: at(2 * time.Second)}},
			},
			want: []Usage{
				{Kind: UsageHeld, At: at(time.Second)},
				{Kind: UsageReleased, At: at(2 * time.Second), Reason: "failed: lost"},
			},
		},
		{
			name: "pending, then stopped: no GPU held",
			steps: []usageStep{
				{at: time.Second, report: Instance{Phase: PhasePending, Reason: "no free A100-80GB GPU"}},
				{at: 2 * time.Second, do: deleteIt},
				{at: 3 * time.Second, report: Instance{Phase: PhaseStopped}},
			},
		},
		{
			// After a restart of thaw, the runtime re-reports an instance
			// it kept running, with its original time; repeated reports give
			// one fact each.
			name: "adopted",
			steps: []usageStep{
				{report: Instance{Phase: PhaseRunning, Held: at(-time.Hour)}, serves: true},
				{at: time.Second, report: Instance{Phase: PhaseRunning, Held: at(-time.Hour)}, serves: true},
				{at: time.Minute, report: Instance{Phase: PhaseFailed, Reason: "node lost", Released: at(time.Minute)}},
				{at: time.Minute + time.Second, report: Instance{Phase: PhaseStopped, Released: at(time.Minute + time.Second)}},
			},
			want: []Usage{
				{Kind: UsageHeld, At: at(-time.Hour)},
				{Kind: UsageReady, At: at(0)},
				{Kind: UsageReleased, At: at(time.Minute), Reason: "failed: node lost"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				d := newDeployment("d1", "alice", "m", 2, 1, 1)
				h := startFleet(t, Config{}, d)
				id := h.waitStarted("d1", 1)[0]
				serving := h.newModelServer("alice/m", true)
				for _, s := range tt.steps {
					time.Sleep(time.Until(at(s.at)))
					if s.do != nil {
						s.do(h)
						synctest.Wait()
						continue
					}
					ev := s.report
					ev.ID, ev.DeployID, ev.Addr = id, "d1", "10.9.9.9:8000" // nothing listens
					if s.serves {
						ev.Addr = serving.addr()
					}
					h.rt.emit(ev)
					synctest.Wait()
				}
				var want []Usage
				for _, u := range tt.want {
					want = append(want, fact(d, id, u.Kind, u.At, u.Reason))
				}
				h.wantFacts(id, want...)
			})
		})
	}
}

// TestUsageScaleDown: a ready instance that leaves on a scale-down is
// released "stopped" when the runtime frees its GPUs, even when the
// runtime reports the stop as a failure (killed after the stop grace);
// the one that stays is not released.
func TestUsageScaleDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDeployment("d1", "alice", "m", 1, 0, 2)
		h := startFleet(t, Config{}, d)
		ready := time.Now()
		ids := h.readyInstances(d, 2)
		h.setDesired(d, 1)
		victim := h.waitDraining(d, ids)
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
