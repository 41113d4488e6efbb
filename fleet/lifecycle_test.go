package fleet

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/internal/bubbletest"
)

func TestStartProbeReady(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDeployment("d1", "alice", "m", 2, 1, 2)
		h := startFleet(t, Config{}, d)
		ids := h.waitStarted("d1", 1)
		h.rt.mu.Lock()
		spec := h.rt.specs[ids[0]]
		h.rt.mu.Unlock()
		wantSpec := Spec{DeployID: "d1", Owner: "alice", Model: "alice/m", GPU: "A100-80GB", NumGPUs: 2, MaxBatchSize: 4,
			Repo: "org/m", Revision: "main", ExtraArgs: []string{"--seed", "1"}, HFToken: "hf_x"}
		if diff := cmp.Diff(wantSpec, spec); diff != "" {
			t.Errorf("started spec (-want +got):\n%s", diff)
		}

		l := h.live(d)
		if l.Status != deploy.StatusDeploying || l.Instances.Running != 0 || l.Instances.Pending != 1 || l.Instances.Desired != 1 ||
			!strings.Contains(l.Instances.Reason, "starting") {
			t.Errorf("while starting: %+v, want deploying, 0 running, 1 pending of 1 desired, reason 'starting'", l)
		}

		ms := h.newModelServer("alice/m", true)
		h.rt.emit(Instance{ID: ids[0], DeployID: "d1", Phase: PhaseRunning, Addr: ms.addr()})
		h.waitRouted("d1", ids[0])
		if diff := cmp.Diff(map[string]string{ids[0]: ms.addr()}, h.ep.routed("d1")); diff != "" {
			t.Errorf("endpoints (-want +got):\n%s", diff)
		}
		h.ep.mu.Lock()
		capacity := h.ep.capacity["d1"]
		h.ep.mu.Unlock()
		if capacity != 4 {
			t.Errorf("capacity = %d, want max_batch_size 4", capacity)
		}
		want := deploy.Live{Status: deploy.StatusRunning, Instances: deploy.Instances{Running: 1, Desired: 1}}
		if diff := cmp.Diff(want, h.live(d)); diff != "" {
			t.Errorf("when ready (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]Counts{{DeployID: "d1", Model: "alice/m", Ready: 1}}, h.f.Counts()); diff != "" {
			t.Errorf("counts (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]Target{{ID: "d1", Min: 1, Max: 2, MaxBatchSize: 4, NumGPUs: 2, Current: 1}}, h.f.Targets()); diff != "" {
			t.Errorf("targets (-want +got):\n%s", diff)
		}
		if n := len(h.rt.started()); n != 1 {
			t.Errorf("%d instances started, want 1", n)
		}
	})
}

// TestNotReadyUntilServing: a running instance is not routed until its
// model server is healthy and lists the deployment's model.
func TestNotReadyUntilServing(t *testing.T) {
	tests := []struct {
		name    string
		model   string
		healthy bool
	}{
		{"health not ok", "alice/m", false},
		{"serves another model", "alice/other", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				d := newDeployment("d1", "alice", "m", 1, 1, 1)
				h := startFleet(t, Config{ProbeInterval: 5 * time.Millisecond}, d)
				id := h.waitStarted("d1", 1)[0]
				ms := h.newModelServer(tt.model, tt.healthy)
				h.rt.emit(Instance{ID: id, DeployID: "d1", Phase: PhaseRunning, Addr: ms.addr()})
				bubbletest.Eventually(t, "probes", func() bool { return ms.probes.Load() >= 3 })
				if r := h.ep.routed("d1"); len(r) != 0 {
					t.Fatalf("routed to %v before the model server could serve", r)
				}
				l := h.live(d)
				if l.Instances.Running != 0 || !strings.Contains(l.Instances.Reason, "starting") {
					t.Errorf("live = %+v, want 0 running and a 'starting' reason", l)
				}
				if tt.healthy {
					return
				}
				ms.healthy.Store(true)
				h.waitRouted("d1", id)
			})
		})
	}
}

func TestPendingReason(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDeployment("d1", "alice", "m", 1, 1, 1)
		h := startFleet(t, Config{}, d)
		id := h.waitStarted("d1", 1)[0]
		const why = "no free A100-80GB GPU: 8 of 8 in use"
		h.rt.emit(Instance{ID: id, DeployID: "d1", Phase: PhasePending, Reason: why})
		bubbletest.Eventually(t, "the runtime's reason in Live", func() bool { return strings.Contains(h.live(d).Instances.Reason, why) })
		l := h.live(d)
		if l.Status != deploy.StatusDeploying || l.Instances.Pending != 1 || l.Instances.Running != 0 {
			t.Errorf("live = %+v, want deploying with 1 pending", l)
		}
		if diff := cmp.Diff([]Counts{{DeployID: "d1", Model: "alice/m", Pending: 1}}, h.f.Counts()); diff != "" {
			t.Errorf("counts (-want +got):\n%s", diff)
		}
	})
}

func TestGPUQuota(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDeployment("d1", "alice", "m", 1, 0, 3)
		h := startFleet(t, Config{GPUQuota: 2}, d)
		h.setDesired(d, 3)
		h.waitStarted("d1", 2)
		settle(2 * time.Second) // let further reconciles run, ticks included
		if got := len(h.rt.started()); got != 2 {
			t.Errorf("started %d instances, want 2 (quota 2 GPUs, 1 GPU each)", got)
		}
		l := h.live(d)
		if l.Instances.Desired != 3 || l.Instances.Pending != 3 || !strings.Contains(l.Instances.Reason, "1 instance(s) held back by the GPU quota") {
			t.Errorf("live = %+v, want 3 desired, 3 pending and a reason saying the quota holds 1 back", l)
		}
		// The two started are starting; the one the quota holds back is pending.
		if diff := cmp.Diff([]Counts{{DeployID: "d1", Model: "alice/m", Starting: 2, Pending: 1}}, h.f.Counts()); diff != "" {
			t.Errorf("counts (-want +got):\n%s", diff)
		}
		if err := h.f.SetDesired(context.Background(), "nope", 1, ""); !errors.Is(err, deploy.ErrNotFound) {
			t.Errorf("SetDesired of an unknown deployment: %v, want ErrNotFound", err)
		}
	})
}

// TestGPUQuotaPerUser: the quota spans a user's deployments, oldest first,
// and one user's use does not hold back another's.
func TestGPUQuotaPerUser(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		older := newDeployment("d1", "alice", "a", 1, 2, 2)
		newer := newDeployment("d2", "alice", "b", 1, 1, 1)
		newer.CreatedAt = created.Add(time.Hour)
		other := newDeployment("d3", "bob", "c", 2, 1, 1)
		h := startFleet(t, Config{GPUQuota: 2}, newer, other, older)
		h.waitStarted("d1", 2)
		h.waitStarted("d3", 1)
		settle(2 * time.Second)
		got := map[string]int{}
		for _, id := range []string{"d1", "d2", "d3"} {
			got[id] = len(h.rt.startedFor(id))
		}
		if diff := cmp.Diff(map[string]int{"d1": 2, "d2": 0, "d3": 1}, got); diff != "" {
			t.Errorf("instances started (-want +got):\n%s", diff)
		}
		if l := h.live(newer); !strings.Contains(l.Instances.Reason, "GPU quota of user alice") {
			t.Errorf("d2 reason = %q, want it to name alice's GPU quota", l.Instances.Reason)
		}
	})
}

func TestSetDesiredClamps(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDeployment("d1", "alice", "m", 1, 1, 2)
		h := startFleet(t, Config{}, d)
		h.waitStarted("d1", 1)
		for _, c := range []struct{ set, want int }{{10, 2}, {0, 1}, {2, 2}} {
			if err := h.f.SetDesired(context.Background(), "d1", c.set, "test"); err != nil {
				t.Fatal(err)
			}
			if got := h.f.Targets()[0].Current; got != c.want {
				t.Errorf("SetDesired(%d): current = %d, want %d (min 1, max 2)", c.set, got, c.want)
			}
		}
	})
}

func TestLiveBeforeReconcile(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startFleet(t, Config{})
		d := newDeployment("new", "alice", "m", 1, 2, 2)
		want := deploy.Live{Status: deploy.StatusInitializing, Instances: deploy.Instances{Pending: 2, Desired: 2}}
		if diff := cmp.Diff(want, h.live(d)); diff != "" {
			t.Errorf("live of a deployment the fleet has not seen (-want +got):\n%s", diff)
		}
	})
}

func TestSettingsChangeApplies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDeployment("d1", "alice", "m", 1, 0, 2)
		h := startFleet(t, Config{}, d)
		settle(2 * time.Second)
		if n := len(h.rt.started()); n != 0 {
			t.Fatalf("started %d instances at min 0", n)
		}
		d.Settings.MinInstances = 2
		h.store.set(d)
		h.waitStarted("d1", 2)
	})
}

// TestDesiredTakenOver: a new leader's fleet starts each deployment at the
// count the previous leader wanted (Config.Desired), clamped to the
// deployment's bounds, so the instances running for it are claimed rather
// than left to be stopped; a deployment the previous leader did not
// publish starts at min_instances.
func TestDesiredTakenOver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		known := newDeployment("d1", "alice", "m", 1, 0, 3)
		clamped := newDeployment("d2", "alice", "n", 1, 0, 2)
		unknown := newDeployment("d3", "alice", "o", 1, 1, 3)
		prev := map[string]int{"d1": 2, "d2": 5}
		h := startFleet(t, Config{Desired: func(id string) (int, bool) { n, ok := prev[id]; return n, ok }}, known, clamped, unknown)
		settle(time.Second)
		for _, c := range []struct {
			d    deploy.Deployment
			want int
		}{{known, 2}, {clamped, 2}, {unknown, 1}} {
			if got := len(h.rt.startedFor(c.d.ID)); got != c.want {
				t.Errorf("%s: %d instances started, want %d", c.d.ID, got, c.want)
			}
			if got := h.live(c.d).Instances.Desired; got != c.want {
				t.Errorf("%s: desired %d, want %d", c.d.ID, got, c.want)
			}
		}
		// The request paths keep routing a taken-over deployment to the
		// previous leader's instances: no push of none at start. A new
		// one is announced with none, so the paths hold its requests.
		h.ep.mu.Lock()
		_, pushedKnown := h.ep.sets["d1"]
		_, pushedUnknown := h.ep.sets["d3"]
		h.ep.mu.Unlock()
		if pushedKnown || !pushedUnknown {
			t.Errorf("endpoints pushed at start: taken over %v (want false), new %v (want true)", pushedKnown, pushedUnknown)
		}
	})
}
