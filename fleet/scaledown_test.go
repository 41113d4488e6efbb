package fleet

import (
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/internal/bubbletest"
)

// TestScaleDownDrains: a ready instance leaves load balancing first and is
// stopped only once the request path reports it drained.
func TestScaleDownDrains(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDeployment("d1", "alice", "m", 1, 0, 2)
		h := startFleet(t, Config{}, d)
		ids := h.readyInstances(d, 2)

		h.setDesired(d, 1)
		victim := h.waitDraining(d, ids)
		settle(2 * time.Second)
		if s := h.rt.stopped(); len(s) != 0 {
			t.Fatalf("stopped %v before the instance drained", s)
		}
		l := h.live(d)
		if diff := cmp.Diff(deploy.Instances{Running: 1, Desired: 1}, l.Instances); diff != "" {
			t.Errorf("while draining (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]Counts{{DeployID: "d1", Model: "alice/m", Ready: 1, Draining: 1}}, h.f.Counts()); diff != "" {
			t.Errorf("counts while draining (-want +got):\n%s", diff)
		}

		// The scraper still reads a draining instance: it serves.
		if got := readyIDs(h.f.ReadyInstances()); !slices.Equal(got, slices.Sorted(slices.Values(ids))) {
			t.Errorf("ready instances while draining %v, want both %v", got, ids)
		}

		h.ep.drain(victim)
		bubbletest.Eventually(t, "the drained instance stopped", func() bool { return slices.Contains(h.rt.stopped(), victim) })
		bubbletest.Eventually(t, "the stopped instance no longer scraped", func() bool {
			return slices.Equal(readyIDs(h.f.ReadyInstances()), []string{otherThan(ids, victim)})
		})
		if set, stop := h.j.index("set d1 ["+otherThan(ids, victim)+"]"), h.j.index("stop "+victim); set < 0 || stop < set {
			t.Errorf("journal %v: want the endpoint removed before the stop", h.j.all())
		}
		bubbletest.Eventually(t, "counts without the stopped instance", func() bool {
			return cmp.Equal([]Counts{{DeployID: "d1", Model: "alice/m", Ready: 1}}, h.f.Counts())
		})
		if s := h.rt.stopped(); len(s) != 1 {
			t.Errorf("stopped %v, want only %s", s, victim)
		}
	})
}

// TestScaleDownStopsNotReadyFirst: instances that do not serve yet go
// before ready ones, and without waiting for a drain.
func TestScaleDownStopsNotReadyFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDeployment("d1", "alice", "m", 1, 0, 2)
		h := startFleet(t, Config{}, d)
		ready := h.readyInstances(d, 1)
		h.setDesired(d, 2)
		ids := h.waitStarted("d1", 2)
		h.setDesired(d, 0)
		bubbletest.Eventually(t, "the pending instance stopped", func() bool { return slices.Contains(h.rt.stopped(), ids[1]) })
		h.waitRouted("d1") // the ready one drains: out of the set, not stopped yet
		if slices.Contains(h.rt.stopped(), ready[0]) {
			t.Errorf("ready instance stopped before it drained")
		}
		h.ep.drain(ready[0])
		bubbletest.Eventually(t, "the ready instance stopped after draining", func() bool { return slices.Contains(h.rt.stopped(), ready[0]) })
	})
}

func TestDeleteStopsInstances(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDeployment("d1", "alice", "m", 1, 2, 2)
		keep := newDeployment("d2", "alice", "k", 1, 0, 1)
		h := startFleet(t, Config{}, d, keep)
		ids := h.waitStarted("d1", 2)
		ms := h.newModelServer("alice/m", true)
		h.rt.emit(Instance{ID: ids[0], DeployID: "d1", Phase: PhaseRunning, Addr: ms.addr()})
		h.waitRouted("d1", ids[0])

		h.store.set(keep)
		bubbletest.Eventually(t, "both instances stopped", func() bool { return cmp.Equal(ids, h.rt.stopped()) })
		if diff := cmp.Diff([]string{"d1"}, h.ep.removedIDs()); diff != "" {
			t.Errorf("Endpoints.Remove calls (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]Counts{{DeployID: "d2", Model: "alice/k"}}, h.f.Counts()); diff != "" {
			t.Errorf("counts after delete (-want +got):\n%s", diff)
		}
	})
}

// TestDeleteFreesQuota: deleting a deployment frees its GPUs for the user's
// other deployments.
func TestDeleteFreesQuota(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDeployment("d1", "alice", "m", 2, 1, 1)
		waiting := newDeployment("d2", "alice", "w", 2, 1, 1)
		waiting.CreatedAt = created.Add(time.Hour)
		h := startFleet(t, Config{GPUQuota: 2}, d, waiting)
		h.waitStarted("d1", 1)
		settle(2 * time.Second)
		if n := len(h.rt.startedFor("d2")); n != 0 {
			t.Fatalf("d2 started %d over the quota", n)
		}
		h.store.set(waiting)
		h.waitStarted("d2", 1)
	})
}

// TestProbeStopsWithInstance: an instance stopped while it loads (deleted
// deployment, or scaled down) must not keep being probed.
func TestProbeStopsWithInstance(t *testing.T) {
	tests := []struct {
		name string
		stop func(h *harness, d deploy.Deployment)
	}{
		{"deployment deleted", func(h *harness, _ deploy.Deployment) { h.store.set() }},
		{"scaled down", func(h *harness, d deploy.Deployment) {
			h.setDesired(d, 0)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				d := newDeployment("d1", "alice", "m", 1, 0, 1)
				h := startFleet(t, Config{ProbeInterval: 5 * time.Millisecond}, d)
				h.setDesired(d, 1)
				id := h.waitStarted("d1", 1)[0]
				loading := h.newModelServer("alice/m", false)
				h.rt.emit(Instance{ID: id, DeployID: "d1", Phase: PhaseRunning, Addr: loading.addr()})
				bubbletest.Eventually(t, "probes", func() bool { return loading.probes.Load() >= 2 })

				tt.stop(h, d)
				bubbletest.Eventually(t, "the instance stopped and forgotten", func() bool {
					if !slices.Contains(h.rt.stopped(), id) {
						return false
					}
					c := h.f.Counts()
					return len(c) == 0 || c[0] == Counts{DeployID: "d1", Model: "alice/m"}
				})
				h.rt.emit(Instance{ID: id, DeployID: "d1", Phase: PhaseStopped}) // as a runtime reports it
				settle(50 * time.Millisecond)
				before := loading.probes.Load()
				settle(100 * time.Millisecond)
				if n := loading.probes.Load() - before; n > 0 {
					t.Errorf("stopped instance probed %d more times in 100ms; its probe goroutine leaked", n)
				}
			})
		})
	}
}

// readyIDs are the instance IDs of rs, in order.
func readyIDs(rs []Ready) []string {
	var out []string
	for _, r := range rs {
		if r.DeployID != "d1" || r.Addr == "" {
			return []string{"bad entry " + r.DeployID + "/" + r.InstanceID}
		}
		out = append(out, r.InstanceID)
	}
	return out
}
