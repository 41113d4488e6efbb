package nomadtest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"
)

// TestServerKilledAllocation: the model server of one of two instances is
// killed (Nomad restarts it in place). Requests sent after the kill are
// all served (by the other instance, then by the restarted one): only
// requests already on the killed server may fail.
func TestServerKilledAllocation(t *testing.T) {
	s := startServer(t, serverOpts{})
	d := s.create(uniqueName("kill"), "H100-80GB", 1, 4, 2, 2)
	t.Cleanup(func() { s.delete(d.DeployID) })
	s.waitDeploy(d.DeployID, 60*time.Second, "running", func(d deployObject) bool { return d.Instances.Running == 2 })
	allocs := waitLiveAllocs(t, d.DeployID, 2)
	var victim string
	for id := range allocs {
		victim = id
		break
	}
	a, _, err := nomadClient().Allocations().Info(victim, nil)
	if err != nil {
		t.Fatal(err)
	}
	port := 0
	for _, p := range a.AllocatedResources.Shared.Ports {
		if p.Label == "http" {
			port = p.Value
		}
	}
	pid := simPID(d.FullName, port)
	if pid == 0 {
		t.Fatalf("no simulator process for %s on port %d", d.FullName, port)
	}

	type result struct {
		start time.Time
		msg   string
	}
	var (
		mu      sync.Mutex
		results []result
		wg      sync.WaitGroup
	)
	stop := time.Now().Add(10 * time.Second)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				start := time.Now()
				msg := checkChat(s.chat(d.FullName, 10))
				mu.Lock()
				results = append(results, result{start, msg})
				mu.Unlock()
			}
		}()
	}
	time.Sleep(2 * time.Second)
	killed := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill simulator %d: %v", pid, err)
	}
	t.Logf("killed the model server of allocation %s (pid %d, port %d)", victim[:8], pid, port)
	wg.Wait()

	var before, after, failedAfter int
	for _, r := range results {
		if r.start.Before(killed) {
			before++
			continue
		}
		after++
		if r.msg == "" {
			continue
		}
		failedAfter++
		// SIGKILL and the socket teardown take a moment: a request the
		// proxy wrote to the dying server just then had reached it (the
		// server reset the connection under it). Later ones must not fail.
		since := r.start.Sub(killed)
		if since < 100*time.Millisecond && (strings.Contains(r.msg, "connection reset") || strings.Contains(r.msg, "EOF")) {
			t.Logf("request sent %v after the kill reached the dying server: %s", since.Round(time.Millisecond), r.msg)
			continue
		}
		t.Errorf("request sent %v after the kill failed: %s", since.Round(time.Millisecond), r.msg)
	}
	t.Logf("%d requests before the kill, %d after (%d failed)", before, after, failedAfter)
	if after < 20 {
		t.Errorf("only %d requests after the kill: the test did not exercise the path", after)
	}
	// The allocation is not replaced: Nomad restarts its task in place.
	s.waitDeploy(d.DeployID, 30*time.Second, "back to 2 running", func(d deployObject) bool { return d.Instances.Running == 2 })
}

// simPID finds the simulator serving model on port.
func simPID(model string, port int) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		cmd := strings.Join(args, " ")
		if len(args) > 1 && args[1] == "sim" && strings.Contains(cmd, "--model "+model+" ") &&
			strings.Contains(cmd, fmt.Sprintf("--port %d ", port)) {
			return pid
		}
	}
	return 0
}

// TestServerStoppedAllocation: an operator stops one of two allocations
// (`nomad alloc stop`). thaw takes the instance out of rotation, starts a
// fresh one, and requests sent after the stop are all served.
func TestServerStoppedAllocation(t *testing.T) {
	s := startServer(t, serverOpts{})
	d := s.create(uniqueName("stop"), "H100-80GB", 1, 4, 2, 2)
	t.Cleanup(func() { s.delete(d.DeployID) })
	s.waitDeploy(d.DeployID, 60*time.Second, "running", func(d deployObject) bool { return d.Instances.Running == 2 })
	before := waitLiveAllocs(t, d.DeployID, 2)
	var victim, survivor string
	for id := range before {
		if victim == "" {
			victim = id
		} else {
			survivor = id
		}
	}

	var (
		mu      sync.Mutex
		results []struct {
			start time.Time
			msg   string
		}
		wg sync.WaitGroup
	)
	stop := time.Now().Add(8 * time.Second)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				start := time.Now()
				msg := checkChat(s.chat(d.FullName, 10))
				mu.Lock()
				results = append(results, struct {
					start time.Time
					msg   string
				}{start, msg})
				mu.Unlock()
			}
		}()
	}
	time.Sleep(2 * time.Second)
	stopped := time.Now()
	if _, err := nomadClient().Allocations().Stop(&api.Allocation{ID: victim}, nil); err != nil {
		t.Fatalf("nomad alloc stop: %v", err)
	}
	t.Logf("stopped allocation %s", victim[:8])
	wg.Wait()
	var after int
	for _, r := range results {
		if r.start.Before(stopped) {
			continue
		}
		after++
		since := r.start.Sub(stopped)
		if r.msg != "" {
			if since < 100*time.Millisecond && (strings.Contains(r.msg, "connection reset") || strings.Contains(r.msg, "EOF")) {
				t.Logf("request sent %v after the stop reached the stopping server: %s", since.Round(time.Millisecond), r.msg)
				continue
			}
			t.Errorf("request sent %v after the stop failed: %s", since.Round(time.Millisecond), r.msg)
		}
	}
	t.Logf("%d requests after the stop", after)
	back := s.waitDeploy(d.DeployID, 60*time.Second, "back to 2 running", func(d deployObject) bool {
		return d.Instances.Running == 2 && d.Instances.Pending == 0
	})
	t.Logf("after the stop: %s", back)
	now := waitLiveAllocs(t, d.DeployID, 2)
	if now[survivor] == nil || now[victim] != nil {
		t.Errorf("live allocations after the stop: %v; want the survivor %s and a new one", keys(now), survivor[:8])
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k[:8])
	}
	return out
}
