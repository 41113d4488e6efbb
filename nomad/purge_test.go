package nomad

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/nomad/api"

	"github.com/thawhq/thaw/fleet"
	"github.com/thawhq/thaw/jobs"
)

// purgeNomad is a Nomad that stops a job, answers its allocations one view
// per request from a script (the last repeated), and forgets them once the
// job is purged, as Nomad does.
type purgeNomad struct {
	// mu guards the fields below.
	mu     sync.Mutex
	script [][]*api.AllocationListStub
	purged bool
	asked  []string // method and path of each request, with purge=
}

func (f *purgeNomad) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	call := req.Method + " " + req.URL.Path
	if p := req.URL.Query().Get("purge"); p != "" {
		call += "?purge=" + p
	}
	f.asked = append(f.asked, call)
	w.Header().Set("X-Nomad-Index", strconv.Itoa(len(f.asked)))
	switch {
	case req.Method == http.MethodDelete && req.URL.Path == "/v1/job/thaw-d-1":
		f.purged = f.purged || req.URL.Query().Get("purge") == "true"
		_ = json.NewEncoder(w).Encode(api.JobDeregisterResponse{EvalID: "e-1"})
	case req.Method == http.MethodGet && req.URL.Path == "/v1/job/thaw-d-1/allocations":
		stubs := []*api.AllocationListStub{}
		if !f.purged && len(f.script) > 0 {
			stubs = f.script[0]
			if len(f.script) > 1 {
				f.script = f.script[1:]
			}
		}
		_ = json.NewEncoder(w).Encode(stubs)
	case req.Method == http.MethodDelete:
		w.WriteHeader(http.StatusNoContent)
	default:
		http.NotFound(w, req)
	}
}

// runningInstance returns a Runtime talking to the Nomad nomad serves, with
// one instance of d-1 started (id) whose allocation a1 of task group g runs
// at h:1 since t0. The server is closed when t ends.
func runningInstance(t *testing.T, nomad http.Handler) (r *Runtime, id, g string) {
	t.Helper()
	srv := httptest.NewServer(nomad)
	t.Cleanup(srv.Close)
	r = runtimeAt(t, srv.URL)
	r.ready = true
	id, err := r.Start(context.Background(), testSpec())
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	g = r.deployments["d-1"].slots[0].group
	v := alloc("a1", g, "run", "running", 10, "h:1")
	v.CreateTime = t0.UnixNano()
	r.onAllocLocked(v)
	return r, id, g
}

// TestPurgeReportsWhenTheGPUsWereFreed: Purge stops the job, waits for its
// allocation to end and reports the instance stopped with the task's
// FinishedAt, then purges: Nomad forgets a purged job's allocations before
// they have stopped, so purging first would lose that time.
func TestPurgeReportsWhenTheGPUsWereFreed(t *testing.T) {
	end := t0.Add(time.Hour)
	stub := func(client string, finished time.Time) *api.AllocationListStub {
		return &api.AllocationListStub{ID: "a1", JobID: "thaw-d-1", TaskGroup: "g1", DesiredStatus: "stop", ClientStatus: client,
			CreateTime: t0.UnixNano(), ModifyTime: end.Add(time.Second).UnixNano(),
			TaskStates: map[string]*api.TaskState{jobs.TaskName: {State: "dead", FinishedAt: finished}}}
	}
	fake := &purgeNomad{script: [][]*api.AllocationListStub{
		{stub("running", time.Time{})}, // stopping
		{stub("complete", end)},
	}}
	r, id, g := runningInstance(t, fake)
	fake.mu.Lock()
	for _, step := range fake.script {
		step[0].TaskGroup = g
	}
	fake.mu.Unlock()

	if err := r.Purge(context.Background(), "d-1"); err != nil {
		t.Fatal(err)
	}
	want := []fleet.Instance{
		{ID: id, DeployID: "d-1", Phase: fleet.PhaseRunning, Addr: "h:1", Held: t0},
		{ID: id, DeployID: "d-1", Phase: fleet.PhaseStopped, Held: t0, Released: end},
	}
	if diff := cmp.Diff(want, reports(r)); diff != "" {
		t.Errorf("reports (-want +got):\n%s", diff)
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	wantCalls := []string{
		"DELETE /v1/job/thaw-d-1?purge=false",
		"GET /v1/job/thaw-d-1/allocations",
		"GET /v1/job/thaw-d-1/allocations",
		"DELETE /v1/job/thaw-d-1?purge=true",
		"DELETE /v1/var/nomad/jobs/thaw-d-1",
	}
	if diff := cmp.Diff(wantCalls, fake.asked); diff != "" {
		t.Errorf("Nomad calls (-want +got):\n%s", diff)
	}
}

// TestPurgeWithoutTheEnd: when Nomad cannot say when the allocation ended
// (the stop fails), Purge still reports the instance stopped, without a
// Released time, and returns the error for the Purger to retry.
func TestPurgeWithoutTheEnd(t *testing.T) {
	r, id, _ := runningInstance(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "no leader", http.StatusInternalServerError)
	}))
	if err := r.Purge(context.Background(), "d-1"); err == nil {
		t.Error("Purge with Nomad failing: no error")
	}
	want := []fleet.Instance{
		{ID: id, DeployID: "d-1", Phase: fleet.PhaseRunning, Addr: "h:1", Held: t0},
		{ID: id, DeployID: "d-1", Phase: fleet.PhaseStopped, Held: t0},
	}
	if diff := cmp.Diff(want, reports(r)); diff != "" {
		t.Errorf("reports (-want +got):\n%s", diff)
	}
}
