package nomadtest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/thawhq/thaw/fleet"
)

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
	spec := newSpec("A100-80GB", 1)
	t.Cleanup(func() { _ = h.rt.Purge(context.Background(), spec.DeployID) })
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
