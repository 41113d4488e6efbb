package nomad

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/nomad/api"

	"github.com/thawhq/thaw/fleet"
	"github.com/thawhq/thaw/jobs"
)

// t0 is a placement time; Nomad's times are Unix nanoseconds.
var t0 = time.Date(2026, 11, 27, 10, 0, 0, 123456789, time.UTC)

func TestAllocTimes(t *testing.T) {
	finished := func(ats ...time.Time) map[string]*api.TaskState {
		m := map[string]*api.TaskState{}
		for i, at := range ats {
			m[string(rune('a'+i))] = &api.TaskState{State: "dead", FinishedAt: at}
		}
		return m
	}
	tests := []struct {
		name        string
		v           allocView
		held, ended time.Time
	}{
		{"running: held, not released",
			allocView{ClientStatus: "running", CreateTime: t0.UnixNano(), ModifyTime: t0.Add(time.Minute).UnixNano()},
			t0, time.Time{}},
		{"complete: the last task's FinishedAt",
			allocView{ClientStatus: "complete", CreateTime: t0.UnixNano(), ModifyTime: t0.Add(time.Hour).UnixNano(),
				TaskStates: finished(t0.Add(5*time.Minute), t0.Add(7*time.Minute), time.Time{})},
			t0, t0.Add(7 * time.Minute)},
		{"failed before any task ran: ModifyTime",
			allocView{ClientStatus: "failed", CreateTime: t0.UnixNano(), ModifyTime: t0.Add(time.Second).UnixNano(),
				TaskStates: finished(time.Time{})},
			t0, t0.Add(time.Second)},
		{"lost node: ModifyTime", allocView{ClientStatus: "lost", CreateTime: t0.UnixNano(), ModifyTime: t0.Add(time.Hour).UnixNano()},
			t0, t0.Add(time.Hour)},
		{"stopping but still running: not released",
			allocView{DesiredStatus: "stop", ClientStatus: "running", CreateTime: t0.UnixNano(), ModifyTime: t0.Add(time.Hour).UnixNano()},
			t0, time.Time{}},
		{"no times in the view", allocView{ClientStatus: "pending"}, time.Time{}, time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.v.held(); !got.Equal(tt.held) {
				t.Errorf("held = %v, want %v", got, tt.held)
			}
			if got := tt.v.released(); !got.Equal(tt.ended) {
				t.Errorf("released = %v, want %v", got, tt.ended)
			}
		})
	}
}

// TestRuntimeReportsAllocationTimes: the fleet hears when the allocation
// was placed (Held, on every report from running on) and when its task
// finished (Released), from Nomad's own times.
func TestRuntimeReportsAllocationTimes(t *testing.T) {
	r := newTestRuntime(t)
	failing, _ := r.Start(context.Background(), testSpec())
	stopped, _ := r.Start(context.Background(), testSpec())
	d := r.deployments["d-1"]
	gf, gs := d.slots[0].group, d.slots[1].group
	timed := func(v allocView, create, modify time.Time) allocView {
		v.CreateTime, v.ModifyTime = create.UnixNano(), modify.UnixNano()
		return v
	}
	t1 := t0.Add(time.Second)
	exit := t0.Add(90 * time.Second)
	down := map[string]*api.TaskState{jobs.TaskName: {State: "dead", Failed: true, FinishedAt: exit,
		Events: []*api.TaskEvent{{Type: api.TaskTerminated, DisplayMessage: "Exit Code: 137"}}}}

	r.mu.Lock()
	r.onAllocLocked(timed(alloc("a1", gf, "run", "pending", 10, "h:1"), t0, t0))
	r.onAllocLocked(timed(alloc("b1", gs, "run", "pending", 11, "h:2"), t1, t1))
	r.onAllocLocked(timed(alloc("a1", gf, "run", "running", 12, "h:1"), t0, t0.Add(3*time.Second)))
	v := timed(alloc("a1", gf, "run", "failed", 13, "h:1"), t0, exit.Add(2*time.Second))
	v.TaskStates = down
	r.onAllocLocked(v)
	r.mu.Unlock()

	stopDone := make(chan error, 1)
	go func() { stopDone <- r.Stop(context.Background(), stopped) }()
	waitFor(t, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return d.slots[0].removing
	})
	end := t1.Add(time.Hour)
	r.mu.Lock()
	v = timed(alloc("b1", gs, "stop", "complete", 20, "h:2"), t1, end.Add(time.Second))
	v.TaskStates = map[string]*api.TaskState{jobs.TaskName: {State: "dead", FinishedAt: end}}
	r.onAllocLocked(v)
	r.mu.Unlock()
	if err := <-stopDone; err != nil {
		t.Fatal(err)
	}

	want := []fleet.Instance{
		{ID: failing, DeployID: "d-1", Phase: fleet.PhaseRunning, Addr: "h:1", Held: t0},
		{ID: stopped, DeployID: "d-1", Phase: fleet.PhaseRunning, Addr: "h:2", Held: t1},
		{ID: failing, DeployID: "d-1", Phase: fleet.PhaseFailed, Reason: "model server failed: Terminated: Exit Code: 137",
			Held: t0, Released: exit},
		{ID: stopped, DeployID: "d-1", Phase: fleet.PhaseStopped, Held: t1, Released: end},
	}
	if diff := cmp.Diff(want, reports(r)); diff != "" {
		t.Errorf("reports (-want +got):\n%s", diff)
	}
}

// TestAdoptedInstanceKeepsPlacementTime: after a thaw restart, the
// instance a Start adopts is reported with its allocation's original
// placement time, not the restart's.
func TestAdoptedInstanceKeepsPlacementTime(t *testing.T) {
	r := newTestRuntime(t)
	r.mu.Lock()
	d := r.deploymentLocked("d-1")
	d.slots = append(d.slots, &slot{id: "d-1/i-running", group: "i-running", orphan: true, done: make(chan struct{})})
	v := alloc("a9", "i-running", "run", "running", 3, "h:9")
	v.CreateTime, v.ModifyTime = t0.UnixNano(), t0.Add(time.Hour).UnixNano()
	r.onAllocLocked(v) // the resync at start
	r.mu.Unlock()
	id, err := r.Start(context.Background(), testSpec())
	if err != nil {
		t.Fatal(err)
	}
	want := []fleet.Instance{{ID: id, DeployID: "d-1", Phase: fleet.PhaseRunning, Addr: "h:9", Held: t0}}
	if diff := cmp.Diff(want, reports(r)); diff != "" {
		t.Errorf("reports (-want +got):\n%s", diff)
	}
}

// fakeNomad serves the allocations of jobs, as Nomad's HTTP API does
// (GET /v1/job/<id>/allocations), and counts the requests.
type fakeNomad struct {
	// mu guards the fields below.
	mu     sync.Mutex
	allocs map[string][]*api.AllocationListStub // by job ID
	status int                                  // non-zero: answer every request with it
	asked  []string                             // request URIs
}

func (f *fakeNomad) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, req.URL.RequestURI())
	if f.status != 0 {
		http.Error(w, "fake nomad says no", f.status)
		return
	}
	rest, ok := strings.CutPrefix(req.URL.Path, "/v1/job/")
	jobID, ok2 := strings.CutSuffix(rest, "/allocations")
	if !ok || !ok2 {
		http.NotFound(w, req)
		return
	}
	w.Header().Set("X-Nomad-Index", "42")
	w.Header().Set("X-Nomad-LastContact", "0")
	w.Header().Set("X-Nomad-KnownLeader", "true")
	stubs := f.allocs[jobID]
	if stubs == nil {
		stubs = []*api.AllocationListStub{}
	}
	_ = json.NewEncoder(w).Encode(stubs)
}

// runtimeAt returns a Runtime whose Nomad client talks to addr.
func runtimeAt(t *testing.T, addr string) *Runtime {
	t.Helper()
	nc, err := api.NewClient(&api.Config{Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	rend, err := jobs.New(jobs.Config{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(Config{Client: nc, Renderer: rend, Engine: jobs.EngineSim, ThawBinary: "/bin/thaw",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestEnded(t *testing.T) {
	stub := func(id, group, client string, create, modify time.Time, finished time.Time) *api.AllocationListStub {
		st := &api.AllocationListStub{ID: id, JobID: "thaw-d-1", TaskGroup: group, DesiredStatus: "run", ClientStatus: client,
			CreateTime: create.UnixNano(), ModifyTime: modify.UnixNano()}
		if !finished.IsZero() {
			st.TaskStates = map[string]*api.TaskState{jobs.TaskName: {State: "dead", FinishedAt: finished}}
		}
		return st
	}
	fake := &fakeNomad{allocs: map[string][]*api.AllocationListStub{"thaw-d-1": {
		stub("a1", "i-running", "running", t0, t0, time.Time{}),
		stub("a2", "i-done", "complete", t0, t0.Add(2*time.Hour), t0.Add(time.Hour)),
		stub("a3", "i-lost", "lost", t0, t0.Add(3*time.Hour), time.Time{}),
		// Nomad replaced i-moved's allocation: both ended; the GPUs were
		// held until the later one finished.
		stub("a4", "i-moved", "complete", t0, t0.Add(10*time.Minute), t0.Add(9*time.Minute)),
		stub("a5", "i-moved", "complete", t0.Add(8*time.Minute), t0.Add(31*time.Minute), t0.Add(30*time.Minute)),
		// i-going: one ended, its replacement still runs.
		stub("a6", "i-going", "complete", t0, t0.Add(10*time.Minute), t0.Add(9*time.Minute)),
		stub("a7", "i-going", "pending", t0.Add(8*time.Minute), t0.Add(8*time.Minute), time.Time{}),
	}}}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	r := runtimeAt(t, srv.URL) // never Run: Ended needs none

	tests := []struct {
		id      string
		at      time.Time
		ok      bool
		unknown bool
	}{
		{id: "d-1/i-running"},
		{id: "d-1/i-done", at: t0.Add(time.Hour), ok: true},
		{id: "d-1/i-lost", at: t0.Add(3 * time.Hour), ok: true},
		{id: "d-1/i-moved", at: t0.Add(30 * time.Minute), ok: true},
		{id: "d-1/i-going"},
		{id: "d-1/i-collected", unknown: true}, // garbage collected, or never placed
		{id: "d-2/i-running", unknown: true},   // another job
		{id: "not-an-instance", unknown: true},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			at, ok, err := r.Ended(context.Background(), tt.id)
			if tt.unknown {
				if !errors.Is(err, fleet.ErrUnknownInstance) {
					t.Errorf("Ended = %v, %v, %v; want ErrUnknownInstance", at, ok, err)
				}
				return
			}
			if err != nil || ok != tt.ok || !at.Equal(tt.at) {
				t.Errorf("Ended = %v, %v, %v; want %v, %v, nil", at, ok, err, tt.at, tt.ok)
			}
		})
	}
	fake.mu.Lock()
	if got := fake.asked[0]; got != "/v1/job/thaw-d-1/allocations?all=true" {
		t.Errorf("asked Nomad %q, want the job's allocations of every job version", got)
	}
	// Nomad failing is an error, not "unknown" (the meter retries later).
	fake.status = http.StatusInternalServerError
	fake.mu.Unlock()
	if _, _, err := r.Ended(context.Background(), "d-1/i-done"); err == nil || errors.Is(err, fleet.ErrUnknownInstance) {
		t.Errorf("Ended while Nomad fails: %v, want an error that is not ErrUnknownInstance", err)
	}
}
