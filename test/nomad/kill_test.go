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

	"github.com/thawhq/thaw/deploy"
)

// TestServerKilledAllocation: the model server of one of two instances is
// killed (Nomad restarts it in place). Requests sent after the kill are
// all served (by the other instance, then by the restarted one): only
// requests already on the killed server may fail.
func TestServerKilledAllocation(t *testing.T) {
	s, d, allocs := runningPair(t, "kill")
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

	results, killed := chatDuring(s, d.FullName, 10*time.Second, func() {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill simulator %d: %v", pid, err)
		}
		t.Logf("killed the model server of allocation %s (pid %d, port %d)", victim[:8], pid, port)
	})

	// SIGKILL and the socket teardown take a moment: a request the
	// proxy wrote to the dying server just then had reached it (the
	// server reset the connection under it). Later ones must not fail.
	before, after, failedAfter := checkAfter(t, results, killed, "the kill", "the dying server")
	t.Logf("%d requests before the kill, %d after (%d failed)", before, after, failedAfter)
	if after < 20 {
		t.Errorf("only %d requests after the kill: the test did not exercise the path", after)
	}
	// The allocation is not replaced: Nomad restarts its task in place.
	s.waitDeploy(d.ID, 30*time.Second, "back to 2 running", func(d deploy.View) bool { return d.Instances.Running == 2 })
}

// runningPair starts thaw server with a deployment named after prefix (two
// instances of one H100, deleted when the test ends) and returns them once
// both instances run, with their two live allocations.
func runningPair(t *testing.T, prefix string) (*server, deploy.View, map[string]*api.AllocationListStub) {
	t.Helper()
	s := startServer(t, serverOpts{})
	d := s.create(uniqueName(prefix), "H100-80GB", 1, 4, 2, 2)
	t.Cleanup(func() { s.delete(d.ID) })
	s.waitDeploy(d.ID, 60*time.Second, "running", func(d deploy.View) bool { return d.Instances.Running == 2 })
	return s, d, waitLiveAllocs(t, d.ID, 2)
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
	s, d, before := runningPair(t, "stop")
	var victim, survivor string
	for id := range before {
		if victim == "" {
			victim = id
		} else {
			survivor = id
		}
	}

	results, stopped := chatDuring(s, d.FullName, 8*time.Second, func() {
		if _, err := nomadClient().Allocations().Stop(&api.Allocation{ID: victim}, nil); err != nil {
			t.Fatalf("nomad alloc stop: %v", err)
		}
		t.Logf("stopped allocation %s", victim[:8])
	})
	_, after, _ := checkAfter(t, results, stopped, "the stop", "the stopping server")
	t.Logf("%d requests after the stop", after)
	back := s.waitDeploy(d.ID, 60*time.Second, "back to 2 running", func(d deploy.View) bool {
		return d.Instances.Running == 2 && d.Instances.Pending == 0
	})
	t.Logf("after the stop: %s", describe(back))
	now := waitLiveAllocs(t, d.ID, 2)
	if now[survivor] == nil || now[victim] != nil {
		t.Errorf("live allocations after the stop: %v; want the survivor %s and a new one", keys(now), survivor[:8])
	}
}

// chatResult is one chat request sent by chatDuring.
type chatResult struct {
	start time.Time
	msg   string // what was wrong with the answer; "" if nothing
}

// chatDuring sends chat completions to model from 4 goroutines for total,
// calls disrupt 2s in, and returns every request's result and when disrupt
// was called.
func chatDuring(s *server, model string, total time.Duration, disrupt func()) ([]chatResult, time.Time) {
	var (
		mu      sync.Mutex
		results []chatResult
		wg      sync.WaitGroup
	)
	stop := time.Now().Add(total)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				start := time.Now()
				msg := checkChat(s.chat(model, 10))
				mu.Lock()
				results = append(results, chatResult{start, msg})
				mu.Unlock()
			}
		}()
	}
	time.Sleep(2 * time.Second)
	at := time.Now()
	disrupt()
	wg.Wait()
	return results, at
}

// checkAfter fails the test for each request sent after at (the moment of
// event) that failed, except one sent within 100ms of at that failed the
// way a request already on server does (connection reset, EOF): it is only
// logged. It returns how many requests were sent before at, after it, and
// how many of those after failed.
func checkAfter(t *testing.T, results []chatResult, at time.Time, event, server string) (before, after, failed int) {
	t.Helper()
	for _, r := range results {
		if r.start.Before(at) {
			before++
			continue
		}
		after++
		if r.msg == "" {
			continue
		}
		failed++
		since := r.start.Sub(at)
		if since < 100*time.Millisecond && (strings.Contains(r.msg, "connection reset") || strings.Contains(r.msg, "EOF")) {
			t.Logf("request sent %v after %s reached %s: %s", since.Round(time.Millisecond), event, server, r.msg)
			continue
		}
		t.Errorf("request sent %v after %s failed: %s", since.Round(time.Millisecond), event, r.msg)
	}
	return before, after, failed
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k[:8])
	}
	return out
}
