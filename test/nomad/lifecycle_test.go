package nomadtest

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/thawhq/thaw/fleet"
	"github.com/thawhq/thaw/jobs"
)

// TestRuntimeScale drives the runtime 0 -> 1 -> 3 -> 0 through real Nomad:
// every instance serves on the address it reports, stopping one instance
// stops exactly its allocation (the others keep running untouched), and at
// zero the job is stopped with its GPUs free.
func TestRuntimeScale(t *testing.T) {
	h := startRuntime(t, rtOpts{})
	spec := h.spec("H100-80GB", 1)
	spec.HFToken = "hf_secret_e2e"

	t0 := time.Now()
	first := h.start(spec)
	in := h.waitRunning(first)
	t.Logf("0 -> 1: running and serving at %s after %v", in.Addr, time.Since(t0).Round(time.Millisecond))

	// The token is in the Variable, not in the job.
	nc := nomadClient()
	v, _, err := nc.Variables().Read(jobs.VariablePath(spec.DeployID), nil)
	if err != nil || v.Items[jobs.HFTokenKey] != spec.HFToken {
		t.Errorf("variable of the HF token: %v, %v", v, err)
	}
	job, _, err := nc.Jobs().Info(jobs.JobID(spec.DeployID), nil)
	if err != nil {
		t.Fatal(err)
	}
	if s := jobString(job); strings.Contains(s, spec.HFToken) {
		t.Errorf("the HF token shows in the job")
	}

	ids := []string{first, h.start(spec), h.start(spec)}
	addrs := map[string]bool{}
	for _, id := range ids {
		addrs[h.waitRunning(id).Addr] = true
	}
	if len(addrs) != 3 {
		t.Errorf("3 instances on %d distinct addresses: %v", len(addrs), slices.Collect(maps.Keys(addrs)))
	}
	before := waitLiveAllocs(t, spec.DeployID, 3)
	t.Logf("1 -> 3: %d allocations running", len(before))

	// Stop the middle one: exactly its allocation goes.
	gone := h.report(ids[1]).Addr
	h.stop(ids[1])
	after := waitLiveAllocs(t, spec.DeployID, 2)
	for id := range after {
		if before[id] == nil {
			t.Errorf("allocation %s is new: stopping one instance replaced another", id)
		}
	}
	for _, id := range []string{ids[0], ids[2]} {
		in := h.report(id)
		if in.Phase != fleet.PhaseRunning || in.Addr == gone {
			t.Errorf("instance %s after stopping %s: %+v", id, ids[1], in)
		}
		h.waitServing(in.Addr)
	}
	if in := h.report(ids[1]); in.Phase != fleet.PhaseStopped {
		t.Errorf("stopped instance's last report: %+v", in)
	}

	// Down to zero: the job stops, nothing holds the GPUs.
	h.stop(ids[0])
	h.stop(ids[2])
	waitLiveAllocs(t, spec.DeployID, 0)
	if !waitFor(10*time.Second, 100*time.Millisecond, func() bool {
		j, _, err := nc.Jobs().Info(jobs.JobID(spec.DeployID), nil)
		return err == nil && j.Stop != nil && *j.Stop
	}) {
		t.Errorf("job %s not stopped at zero instances", jobs.JobID(spec.DeployID))
	}

	// Up again from zero, then purge: job and variable gone.
	again := h.start(spec)
	h.waitRunning(again)
	if err := h.rt.Purge(context.Background(), spec.DeployID); err != nil {
		t.Fatalf("Purge: %v", err)
	}
	waitLiveAllocs(t, spec.DeployID, 0)
	if _, _, err := nc.Jobs().Info(jobs.JobID(spec.DeployID), nil); err == nil {
		t.Errorf("job still there after Purge")
	}
	if _, _, err := nc.Variables().Read(jobs.VariablePath(spec.DeployID), nil); err == nil {
		t.Errorf("variable still there after Purge")
	}
	h.stop(again) // the fleet stops it too: not an error
}

// TestRuntimePlacementFailure: 3 instances x 2 H100 on 4 H100s. The
// instance Nomad cannot place is pending with Nomad's reason in plain
// words, and places by itself once another deployment is purged.
func TestRuntimePlacementFailure(t *testing.T) {
	h := startRuntime(t, rtOpts{})
	other := h.spec("H100-80GB", 2)
	spec := h.spec("H100-80GB", 2)
	o := h.start(other)
	h.waitRunning(o)

	a, b := h.start(spec), h.start(spec)
	var pendingID string
	waitFor(60*time.Second, 50*time.Millisecond, func() bool {
		ra, rb := h.report(a), h.report(b)
		switch {
		case ra.Phase == fleet.PhaseRunning && rb.Phase == fleet.PhasePending && rb.Reason != "":
			pendingID = b
		case rb.Phase == fleet.PhaseRunning && ra.Phase == fleet.PhasePending && ra.Reason != "":
			pendingID = a
		}
		return pendingID != ""
	})
	if pendingID == "" {
		t.Fatalf("want one running and one pending with a reason: %+v / %+v", h.report(a), h.report(b))
	}
	reason := h.report(pendingID).Reason
	t.Logf("pending reason: %s", reason)
	if !strings.HasPrefix(reason, "no node has 2 free H100-80GB GPUs") {
		t.Errorf("pending reason = %q, want it to start with %q", reason, "no node has 2 free H100-80GB GPUs")
	}
	time.Sleep(time.Second)
	if in := h.report(pendingID); in.Phase != fleet.PhasePending {
		t.Fatalf("instance placed on GPUs that are not free: %+v", in)
	}

	// Deleting the other deployment frees 2 H100s: Nomad's blocked
	// evaluation places the pending instance.
	t0 := time.Now()
	if err := h.rt.Purge(context.Background(), other.DeployID); err != nil {
		t.Fatalf("Purge: %v", err)
	}
	h.waitRunning(pendingID)
	t.Logf("pending instance placed and serving %v after the purge", time.Since(t0).Round(time.Millisecond))
}

// TestRuntimeRestartAdopts: a thaw that stops leaves its allocations
// running; the next one hands them out to its first Starts (same
// allocations, same addresses, nothing restarted or duplicated) and stops
// the ones nobody claims after the grace period.
func TestRuntimeRestartAdopts(t *testing.T) {
	h1 := startRuntime(t, rtOpts{})
	spec := newSpec("H100-80GB", 1)
	a, b := h1.start(spec), h1.start(spec)
	addrs := map[string]bool{h1.waitRunning(a).Addr: true, h1.waitRunning(b).Addr: true}
	before := waitLiveAllocs(t, spec.DeployID, 2)
	h1.close()
	// The fleet stops every instance when thaw shuts down: a no-op here.
	if err := h1.rt.Stop(context.Background(), a); err != nil {
		t.Errorf("Stop after shutdown: %v", err)
	}
	time.Sleep(time.Second)
	if got := liveAllocs(t, spec.DeployID); len(got) != 2 {
		t.Fatalf("after thaw stopped: %d live allocations, want the 2 still running", len(got))
	}

	h2 := startRuntime(t, rtOpts{adoptGrace: 3 * time.Second})
	t.Cleanup(func() { _ = h2.rt.Purge(context.Background(), spec.DeployID) })
	t0 := time.Now()
	x := h2.start(spec)
	in := h2.waitRunning(x)
	t.Logf("adopted %s at %s in %v", x, in.Addr, time.Since(t0).Round(time.Millisecond))
	if !addrs[in.Addr] {
		t.Errorf("adopted instance at %s, want one of the running %v", in.Addr, addrs)
	}
	after := liveAllocs(t, spec.DeployID)
	for id := range after {
		if before[id] == nil {
			t.Errorf("allocation %s is new: the restart started a duplicate", id)
		}
	}
	// The unclaimed one goes after the grace period; the adopted one stays.
	left := waitLiveAllocs(t, spec.DeployID, 1)
	for id := range left {
		if before[id] == nil {
			t.Errorf("allocation %s is new", id)
		}
	}
	if r := h2.report(x); r.Phase != fleet.PhaseRunning {
		t.Errorf("adopted instance after the grace period: %+v", r)
	}
	h2.waitServing(in.Addr)
}

// TestRuntimeCrashLoop: a model server that keeps exiting fails its
// allocation after Nomad's restarts; the runtime reports it failed with
// the cause, and Nomad does not replace it (the fleet decides).
func TestRuntimeCrashLoop(t *testing.T) {
	h := startRuntime(t, rtOpts{thawBinary: "/bin/false"})
	spec := h.spec("A100-80GB", 1)
	id := h.start(spec)
	in := h.waitReport(id, 90*time.Second, "failed", func(in fleet.Instance) bool { return in.Phase == fleet.PhaseFailed })
	t.Logf("failed: %s", in.Reason)
	if !strings.Contains(in.Reason, "Exit Code: 1") {
		t.Errorf("fail reason %q does not give the exit code", in.Reason)
	}
	time.Sleep(2 * time.Second)
	if got := liveAllocs(t, spec.DeployID); len(got) != 0 {
		t.Errorf("%d live allocations after the failure: Nomad replaced it", len(got))
	}
}
