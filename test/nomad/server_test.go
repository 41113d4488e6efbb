package nomadtest

import (
	"strings"
	"testing"
	"time"

	"github.com/thawhq/thaw/deploy"
)

// TestServerScale: thaw server scales a deployment 0 -> 1 -> N -> 0
// through real Nomad: a request wakes it, a burst scales it out, idleness
// scales it to zero and stops the job.
func TestServerScale(t *testing.T) {
	s := startServer(t, serverOpts{idleTimeout: 3 * time.Second})
	d := s.create(uniqueName("scale"), "H100-80GB", 1, 2, 0, 4)
	t.Cleanup(func() { s.delete(d.ID) })
	s.waitDeploy(d.ID, 10*time.Second, "running at zero", func(d deploy.View) bool {
		return d.Status == "running" && d.Instances.Desired == 0
	})
	if n := len(liveAllocs(t, d.ID)); n != 0 {
		t.Fatalf("%d allocations at zero instances", n)
	}

	// 0 -> 1: the first request waits for the cold start and is served.
	r, err := s.chat(d.FullName, 5)
	if msg := checkChat(r, err); msg != "" {
		t.Fatalf("first request: %s", msg)
	}
	t.Logf("0 -> 1: first request served, cold start %s", r.Header.Get("X-Thaw-Cold-Start"))
	if r.Header.Get("X-Thaw-Cold-Start") == "" {
		t.Errorf("first request has no X-Thaw-Cold-Start")
	}
	waitLiveAllocs(t, d.ID, 1)

	// 1 -> 4: a burst of 8 requests of ~1s at max_batch_size 2.
	burst := s.chats(d.FullName, 8, 200)
	peak := s.waitDeploy(d.ID, 30*time.Second, "at 4 running instances", func(d deploy.View) bool {
		return d.Instances.Running == 4
	})
	t.Logf("1 -> 4: %s", describe(peak))
	waitLiveAllocs(t, d.ID, 4)
	for _, msg := range burst() {
		t.Errorf("burst request: %s", msg)
	}

	// -> 0 after the idle timeout: no allocation, the job stopped.
	s.waitDeploy(d.ID, 30*time.Second, "back at zero", func(d deploy.View) bool {
		return d.Instances.Running == 0 && d.Instances.Desired == 0
	})
	waitLiveAllocs(t, d.ID, 0)
	if !waitFor(10*time.Second, 100*time.Millisecond, func() bool {
		j, _, err := nomadClient().Jobs().Info(jobOf(d), nil)
		return err == nil && j.Stop != nil && *j.Stop
	}) {
		t.Errorf("job %s not stopped at zero instances", jobOf(d))
	}
}

// TestServerPlacementFailure: 3 instances x 2 H100 on 4 H100s. Two run, the
// third is pending with Nomad's reason in plain words; deleting the other
// deployment frees its GPUs and the pending instance places by itself.
func TestServerPlacementFailure(t *testing.T) {
	s := startServer(t, serverOpts{})
	other := s.create(uniqueName("other"), "H100-80GB", 2, 4, 1, 1)
	s.waitDeploy(other.ID, 60*time.Second, "running", func(d deploy.View) bool { return d.Instances.Running == 1 })
	d := s.create(uniqueName("short"), "H100-80GB", 2, 4, 2, 2)
	t.Cleanup(func() { s.delete(d.ID) })
	short := s.waitDeploy(d.ID, 60*time.Second, "short of GPUs with a reason", func(d deploy.View) bool {
		return d.Instances.Running == 1 && d.Instances.Pending == 1 && strings.Contains(d.Instances.Reason, "no node has 2 free H100-80GB GPUs")
	})
	t.Logf("shortfall: %s", describe(short))
	if short.Instances.Desired != 2 || short.Status != "deploying" {
		t.Errorf("deployment short of GPUs: %s, want desired 2 and status deploying", describe(short))
	}

	t0 := time.Now()
	s.delete(other.ID)
	s.waitDeploy(d.ID, 60*time.Second, "fully running", func(d deploy.View) bool {
		return d.Instances.Running == 2 && d.Instances.Pending == 0 && d.Status == "running"
	})
	t.Logf("placed %v after the other deployment was deleted", time.Since(t0).Round(time.Millisecond))
	if !waitFor(10*time.Second, 100*time.Millisecond, func() bool {
		_, _, err := nomadClient().Jobs().Info(jobOf(other), nil)
		return err != nil
	}) {
		t.Errorf("job %s of the deleted deployment not purged", jobOf(other))
	}
}

// TestServerRestart: restarting thaw server adopts the running
// allocations: none restarted, none added, and requests are served.
func TestServerRestart(t *testing.T) {
	redis := startRedis(t)
	dir := t.TempDir()
	s1 := startServer(t, serverOpts{redisAddr: redis, dataDir: dir, adoptGrace: 3 * time.Second})
	d := s1.create(uniqueName("restart"), "A100-80GB", 1, 4, 2, 2)
	s1.waitDeploy(d.ID, 60*time.Second, "running", func(d deploy.View) bool { return d.Instances.Running == 2 })
	before := waitLiveAllocs(t, d.ID, 2)
	s1.stop()
	time.Sleep(time.Second)
	if n := len(liveAllocs(t, d.ID)); n != 2 {
		t.Fatalf("%d live allocations after thaw server stopped, want its 2 still running", n)
	}

	s2 := startServer(t, serverOpts{redisAddr: redis, dataDir: dir, adoptGrace: 3 * time.Second})
	t.Cleanup(func() { s2.delete(d.ID) })
	s2.waitDeploy(d.ID, 30*time.Second, "running again", func(d deploy.View) bool { return d.Instances.Running == 2 })
	if msg := checkChat(s2.chat(d.FullName, 5)); msg != "" {
		t.Errorf("request after the restart: %s", msg)
	}
	time.Sleep(4 * time.Second) // past the adoption grace
	after := liveAllocs(t, d.ID)
	if len(after) != 2 {
		t.Errorf("%d live allocations after the restart, want 2", len(after))
	}
	for id, a := range after {
		if before[id] == nil {
			t.Errorf("allocation %s (%s) is new: the restart replaced or duplicated an instance", id, a.Name)
		}
	}
}
