package nomad

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/nomad/api"

	"github.com/thawhq/thaw/fleet"
)

// newTestRuntime returns a Runtime that never reaches Nomad (nothing runs
// Run): tests drive its state machine with allocation and evaluation views.
func newTestRuntime(t *testing.T) *Runtime {
	t.Helper()
	r := runtimeAt(t, "http://127.0.0.1:1")
	r.ready = true
	return r
}

// reports takes the reports queued so far (no pump runs in these tests).
func reports(r *Runtime) []fleet.Instance {
	r.events.Flush()
	var out []fleet.Instance
	for {
		select {
		case ev := <-r.events.Events():
			out = append(out, ev)
		default:
			return out
		}
	}
}

func testSpec() fleet.Spec {
	return fleet.Spec{DeployID: "d-1", Owner: "dev", Model: "dev/m", GPU: "H100-80GB", NumGPUs: 2, MaxBatchSize: 4, Repo: "org/m"}
}

func alloc(id, group, desired, client string, idx uint64, addr string) allocView {
	return allocView{ID: id, JobID: "thaw-d-1", TaskGroup: group, DesiredStatus: desired, ClientStatus: client, ModifyIndex: idx, Addr: addr}
}

func TestRuntimeLifecycle(t *testing.T) {
	r := newTestRuntime(t)
	id, err := r.Start(context.Background(), testSpec())
	if err != nil {
		t.Fatal(err)
	}
	group := r.deployments["d-1"].slots[0].group
	if id != "d-1/"+group || !r.deployments["d-1"].dirty {
		t.Fatalf("Start: id %q, group %q, dirty %v", id, group, r.deployments["d-1"].dirty)
	}
	tg := r.deployments["d-1"].slots[0].tg
	if *tg.Name != group || *tg.ReschedulePolicy.Attempts != 0 || *tg.Count != 1 {
		t.Errorf("task group: name %q, reschedule attempts %d, count %d", *tg.Name, *tg.ReschedulePolicy.Attempts, *tg.Count)
	}

	metric := &api.AllocationMetric{NodesEvaluated: 1, NodesExhausted: 1, NodesInPool: 1,
		DimensionExhausted: map[string]int{"devices: no devices match request": 1}}
	reason := `no node has 2 free H100-80GB GPUs (Nomad: 1 node evaluated, 1 exhausted, "devices: no devices match request")`
	steps := []struct {
		name  string
		apply func()
		want  []fleet.Instance
	}{
		{"placement failure", func() {
			r.onEvalLocked(&api.Evaluation{JobID: "thaw-d-1", ModifyIndex: 10, FailedTGAllocs: map[string]*api.AllocationMetric{group: metric}})
		}, []fleet.Instance{{ID: id, DeployID: "d-1", Phase: fleet.PhasePending, Reason: reason}}},
		{"same evaluation again (resync)", func() {
			r.onEvalLocked(&api.Evaluation{JobID: "thaw-d-1", ModifyIndex: 10, FailedTGAllocs: map[string]*api.AllocationMetric{group: metric}})
		}, nil},
		{"placed by the blocked evaluation: the port is known, the fleet may probe", func() {
			r.onAllocLocked(alloc("a1", group, "run", "pending", 20, "127.0.0.1:9000"))
		}, []fleet.Instance{{ID: id, DeployID: "d-1", Phase: fleet.PhaseRunning, Addr: "127.0.0.1:9000"}}},
		{"running: nothing new to report", func() {
			r.onAllocLocked(alloc("a1", group, "run", "running", 21, "127.0.0.1:9000"))
		}, nil},
		{"stale view and duplicate are ignored", func() {
			r.onAllocLocked(alloc("a1", group, "run", "pending", 20, "127.0.0.1:9000"))
			r.onAllocLocked(alloc("a1", group, "run", "running", 21, "127.0.0.1:9000"))
		}, nil},
		{"an old failure does not make a placed instance pending", func() {
			r.onEvalLocked(&api.Evaluation{JobID: "thaw-d-1", ModifyIndex: 11, FailedTGAllocs: map[string]*api.AllocationMetric{group: metric}})
		}, nil},
		{"other jobs and groups are ignored", func() {
			r.onAllocLocked(allocView{ID: "x", JobID: "thaw-d-2", TaskGroup: group, DesiredStatus: "run", ClientStatus: "running", Addr: "h:1"})
			r.onAllocLocked(alloc("y", "i-other", "run", "running", 30, "h:2"))
		}, nil},
		{"crash loop: failed without a Stop", func() {
			v := alloc("a1", group, "run", "failed", 40, "127.0.0.1:9000")
			v.TaskStates = map[string]*api.TaskState{"server": {Restarts: 2, Events: []*api.TaskEvent{{Type: api.TaskTerminated, DisplayMessage: "Exit Code: 1"}}}}
			r.onAllocLocked(v)
		}, []fleet.Instance{{ID: id, DeployID: "d-1", Phase: fleet.PhaseFailed, Reason: "model server failed: Terminated: Exit Code: 1 (restarted 2 times)"}}},
	}
	for _, st := range steps {
		r.mu.Lock()
		st.apply()
		r.mu.Unlock()
		if diff := cmp.Diff(st.want, reports(r)); diff != "" {
			t.Errorf("%s: reports (-want +got):\n%s", st.name, diff)
		}
	}
	if n := len(r.deployments["d-1"].slots); n != 0 {
		t.Errorf("%d slots after the failure, want the group gone", n)
	}
	if err := r.Stop(context.Background(), id); err != nil {
		t.Errorf("Stop of a failed instance: %v", err)
	}
}

func TestRuntimeStopWaitsForTheAllocation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newTestRuntime(t)
		id, _ := r.Start(context.Background(), testSpec())
		group := r.deployments["d-1"].slots[0].group
		r.mu.Lock()
		r.onAllocLocked(alloc("a1", group, "run", "running", 5, "h:1"))
		r.mu.Unlock()
		reports(r)

		stopped := make(chan error, 1)
		go func() { stopped <- r.Stop(context.Background(), id) }()
		synctest.Wait() // Stop is blocked, or has returned
		select {
		case err := <-stopped:
			t.Fatalf("Stop returned (%v) before the allocation ended", err)
		default:
		}
		r.mu.Lock()
		leaving := r.deployments["d-1"].slots[0].removing
		r.onAllocLocked(alloc("a1", group, "stop", "running", 6, "h:1"))
		r.onAllocLocked(alloc("a1", group, "stop", "complete", 7, "h:1"))
		r.mu.Unlock()
		if !leaving {
			t.Errorf("Stop did not mark the group for removal")
		}
		select {
		case err := <-stopped:
			if err != nil {
				t.Errorf("Stop: %v", err)
			}
		case <-time.After(time.Second):
			t.Fatal("Stop did not return once the allocation completed")
		}
		if diff := cmp.Diff([]fleet.Instance{{ID: id, DeployID: "d-1", Phase: fleet.PhaseStopped}}, reports(r)); diff != "" {
			t.Errorf("reports (-want +got):\n%s", diff)
		}
	})
}

func TestRuntimeAdoptsOrphansFirst(t *testing.T) {
	r := newTestRuntime(t)
	r.mu.Lock()
	d := r.deploymentLocked("d-1")
	for _, g := range []string{"i-unplaced", "i-running"} {
		d.slots = append(d.slots, &slot{id: "d-1/" + g, group: g, orphan: true, done: make(chan struct{})})
	}
	r.onAllocLocked(alloc("a9", "i-running", "run", "running", 3, "h:9"))
	r.mu.Unlock()
	if got := reports(r); len(got) != 0 {
		t.Errorf("orphans reported before a Start claimed them: %+v", got)
	}
	ids := []string{}
	for range 3 {
		id, err := r.Start(context.Background(), testSpec())
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if ids[0] != "d-1/i-running" || ids[1] != "d-1/i-unplaced" || ids[2] == ids[0] || ids[2] == ids[1] {
		t.Errorf("Start IDs = %v, want the running orphan, then the unplaced one, then a new group", ids)
	}
	if diff := cmp.Diff([]fleet.Instance{{ID: "d-1/i-running", DeployID: "d-1", Phase: fleet.PhaseRunning, Addr: "h:9"}}, reports(r)); diff != "" {
		t.Errorf("reports (-want +got):\n%s", diff)
	}
}

func TestStartBeforeAdoption(t *testing.T) {
	r := newTestRuntime(t)
	r.ready = false
	if _, err := r.Start(context.Background(), testSpec()); err != ErrNotReady {
		t.Errorf("Start before adoption: %v, want ErrNotReady", err)
	}
	spec := testSpec()
	spec.GPU = "TPU-v5"
	r.ready = true
	if _, err := r.Start(context.Background(), spec); err == nil {
		t.Errorf("Start with an unknown GPU type succeeded")
	}
}

func TestPlans(t *testing.T) {
	r := newTestRuntime(t)
	spec := testSpec()
	spec.HFToken = "hf_x"
	a, _ := r.Start(context.Background(), spec)
	b, _ := r.Start(context.Background(), spec)
	ps := r.plans(time.Now())
	if len(ps) != 1 || ps[0].job == nil || len(ps[0].job.TaskGroups) != 2 || ps[0].token == nil || *ps[0].token != "hf_x" {
		t.Fatalf("first plan: %+v", ps)
	}
	if s := jobString(ps[0].job); contains(s, "hf_x") {
		t.Errorf("the HF token is in the job")
	}
	// Written: the token is not written again; a Stop drops one group.
	r.mu.Lock()
	d := r.deployments["d-1"]
	d.dirty, d.registered, d.token = false, true, "hf_x"
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	go func() { _ = r.Stop(ctx, a) }()
	waitFor(t, func() bool { return len(r.plans(time.Now())) == 1 })
	p := r.plans(time.Now())[0]
	if len(p.job.TaskGroups) != 1 || *p.job.TaskGroups[0].Name != d.slots[1].group || len(p.leaving) != 1 || p.token != nil {
		t.Errorf("plan after Stop(%s): %d groups, %d leaving, token %v", a, len(p.job.TaskGroups), len(p.leaving), p.token)
	}
	// The last one leaves: the job is stopped.
	go func() { _ = r.Stop(ctx, b) }()
	waitFor(t, func() bool {
		ps := r.plans(time.Now())
		return len(ps) == 1 && ps[0].job == nil
	})
	if p := r.plans(time.Now())[0]; !p.deregister || len(p.leaving) != 2 {
		t.Errorf("plan with no instance left: deregister %v, leaving %d", p.deregister, len(p.leaving))
	}
}

func jobString(j *api.Job) string {
	b, _ := json.Marshal(j)
	return string(b)
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 2s")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestRuntimeReplacedAllocation(t *testing.T) {
	r := newTestRuntime(t)
	id, _ := r.Start(context.Background(), testSpec())
	group := r.deployments["d-1"].slots[0].group
	a := alloc("a1", group, "run", "running", 5, "h:1")
	a.CreateIndex = 5
	older := alloc("a0", group, "run", "running", 6, "h:0")
	older.CreateIndex = 3
	b := alloc("b2", group, "run", "pending", 9, "h:2")
	b.CreateIndex = 9
	aStop, aDone := a, a
	aStop.DesiredStatus, aStop.ModifyIndex = "stop", 8
	aDone.DesiredStatus, aDone.ClientStatus, aDone.ModifyIndex = "stop", "complete", 10

	r.mu.Lock()
	for _, v := range []allocView{a, older, aStop, b, aDone} {
		r.onAllocLocked(v)
	}
	r.mu.Unlock()
	want := []fleet.Instance{
		{ID: id, DeployID: "d-1", Phase: fleet.PhaseRunning, Addr: "h:1"},
		{ID: id, DeployID: "d-1", Phase: fleet.PhaseFailed, Reason: "Nomad replaced the instance's allocation a1 (alloc stop, node drain or preemption)"},
	}
	if diff := cmp.Diff(want, reports(r)); diff != "" {
		t.Errorf("reports (-want +got):\n%s", diff)
	}
	if d := r.deployments["d-1"]; len(d.slots) != 0 || !d.dirty {
		t.Errorf("after the replacement: %d slots, dirty %v; want the group leaving", len(d.slots), d.dirty)
	}
}
