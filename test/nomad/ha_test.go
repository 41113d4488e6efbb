package nomadtest

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/thawhq/thaw/auth"
	"github.com/thawhq/thaw/client"
	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/nomad"
	"github.com/thawhq/thaw/test/e2e"
)

// leaderFailoverBound is how soon a follower leads after the leader is
// SIGKILLed with the default lock: Nomad frees a lock 2 x TTL after its
// last renewal, plus the lock delay; the follower campaigns every second;
// 2 s more for a loaded machine.
const leaderFailoverBound = 2*nomad.DefaultLockTTL + nomad.DefaultLockDelay + 3*time.Second

// handoverBound is how soon a follower leads after the leader is stopped
// gracefully (SIGTERM): the leader releases the lock at once.
const handoverBound = 3 * time.Second

// TestHAFollowerWrites: on make cluster's two replicas, the follower is as
// good as the leader for the deploy API: a deployment created on the
// follower shows on the leader within a second, an update on the leader on
// the follower, a delete on the follower on the leader; two updates of one
// deployment sent at once to both replicas never both win silently (409
// conflict for one); and a token revoked in the users file is refused on
// both replicas and through Envoy within seconds.
func TestHAFollowerWrites(t *testing.T) {
	h := startHA(t, "--sim-startup", "300ms")
	ld, fl, _ := h.roles(30 * time.Second)
	L, F := h.api(h.Replicas[ld].API), h.api(h.Replicas[fl].API)
	ctx := t.Context()

	name := uniqueName("ha")
	d, err := F.Create(ctx, haCreate(name, 0, 1))
	if err != nil {
		t.Fatalf("create on the follower: %v", err)
	}
	within(t, "the follower's create to show on the leader", func() bool {
		got, err := L.Get(ctx, d.ID)
		return err == nil && got.ModelName == name && got.Settings == d.Settings
	})
	up, err := L.Update(ctx, d.ID, deploy.Settings{MinInstances: 0, MaxInstances: 2})
	if err != nil {
		t.Fatalf("update on the leader: %v", err)
	}
	within(t, "the leader's update to show on the follower", func() bool {
		got, err := F.Get(ctx, d.ID)
		return err == nil && got.Settings == up.Settings
	})

	t.Run("racing updates", func(t *testing.T) { racingAPIUpdates(t, L, F, d.ID) })

	if err := F.Delete(ctx, d.ID); err != nil {
		t.Fatalf("delete on the follower: %v", err)
	}
	within(t, "the follower's delete to show on the leader (404)", func() bool {
		_, err := L.Get(ctx, d.ID)
		return apiStatus(err) == http.StatusNotFound
	})

	t.Run("revoked token", func(t *testing.T) { revokedEverywhere(t, h) })
}

// racingAPIUpdates sends two updates of deployment id at once, one to each
// replica, both holding the same version: one is applied (200), the other
// refused (409 conflict), and both replicas then hold the winner. A round
// where both answer 200 is one where a replica had followed the other's
// write before its own (the second update saw the first): the race is
// tried again, and must be provoked within 5 rounds.
func racingAPIUpdates(t *testing.T, L, F *client.Client, id string) {
	ctx := t.Context()
	replicas := []*client.Client{L, F}
	for round := 1; round <= 5; round++ {
		within(t, "both replicas to hold the same version", func() bool {
			a, errA := L.Get(ctx, id)
			b, errB := F.Get(ctx, id)
			return errA == nil && errB == nil && a.Settings == b.Settings && a.UpdatedAt.Equal(b.UpdatedAt)
		})
		want := []deploy.Settings{{MinInstances: 0, MaxInstances: 1 + round%2}, {MinInstances: 0, MaxInstances: 3 + round%2}}
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			views = make([]deploy.View, 2)
			errs  = make([]error, 2)
		)
		for i, c := range replicas {
			wg.Go(func() {
				<-start
				views[i], errs[i] = c.Update(ctx, id, want[i])
			})
		}
		close(start)
		wg.Wait()
		won := -1
		for i, err := range errs {
			switch {
			case err == nil:
				won = i
			case apiStatus(err) != http.StatusConflict:
				t.Fatalf("round %d: update on %s: %v, want 200 or 409", round, []string{"the leader", "the follower"}[i], err)
			case !strings.Contains(err.Error(), "conflict"):
				t.Errorf("round %d: 409 without the conflict code: %v", round, err)
			}
		}
		if won == -1 {
			t.Fatalf("round %d: neither racing update was applied: %v", round, errs)
		}
		if errs[0] == nil && errs[1] == nil {
			t.Logf("round %d: both updates answered 200 (one replica had followed the other's write first); again", round)
			continue
		}
		// The loser holds the winner's update at once (it reloaded it on
		// the conflict); the winner has it too.
		for i, c := range replicas {
			got, err := c.Get(ctx, id)
			if err != nil || got.Settings != want[won] {
				t.Errorf("round %d: replica %d after the race holds %+v (%v), want the winner's %+v", round, i, got.Settings, err, want[won])
			}
		}
		t.Logf("round %d: racing updates: %s won, the other got 409 conflict", round, []string{"the leader's", "the follower's"}[won])
		return
	}
	t.Errorf("5 rounds of updates sent at once to both replicas never conflicted: a racing write may be lost")
}

// revokedEverywhere: user bob, added to the cluster's users file, is
// accepted on both replicas' APIs and through Envoy; his line removed, his
// token gets 401 on all of them within revokeBound.
func revokedEverywhere(t *testing.T, h *haCluster) {
	usersFile := filepath.Join(h.Dir, "thaw", "users")
	original, err := os.ReadFile(usersFile)
	if err != nil {
		t.Fatalf("the cluster's users file: %v", err)
	}
	const bobToken = "tok-bob-ha-e2e"
	var checks []usersCheck
	for i, r := range h.Replicas {
		checks = append(checks, usersCheck{fmt.Sprintf("replica %d's API", i+1), r.API, "GET", "/deploy/list", nil})
	}
	checks = append(checks, usersCheck{"the edge's API route", h.Edge, "GET", "/deploy/list", nil},
		usersCheck{"the edge's models list", h.Edge, "GET", "/v1/openai/models", nil})
	appendLine(t, usersFile, "bob "+auth.HashToken(bobToken)+"\n")
	if took, pending := until(t, checks, bobToken, func(s int) bool { return s == http.StatusOK }); len(pending) > 0 {
		t.Fatalf("bob's new token not accepted on %s within %s", pending[0].name, revokeBound)
	} else {
		t.Logf("bob's token accepted everywhere %s after its line was added", took)
	}
	replaceUsersFile(t, usersFile, string(original))
	took, pending := until(t, checks, bobToken, func(s int) bool { return s == http.StatusUnauthorized })
	for _, ck := range pending {
		t.Errorf("bob's revoked token not refused with 401 on %s within %s of its removal", ck.name, revokeBound)
	}
	t.Logf("HA: a revoked token was refused on both replicas and through Envoy %s after its line was removed", took)
	for _, ck := range checks {
		if got := status(t, ck, h.Token); got != http.StatusOK {
			t.Errorf("dev's token on %s after bob was removed: HTTP %d, want 200", ck.name, got)
		}
	}
}

// TestHALeaderKilledMidBurst: a deployment scaled to zero (max 2
// instances) gets a burst of 200 chats through Envoy, streamed and not,
// 50 at a time, and the leader replica is SIGKILLed while the first are
// held: once after it started the deployment's instances in Nomad, once
// as the first request leaves (the wake reaches no leader; the next one
// scales from the demand the activators keep in Redis). Every request is
// answered, a follower leads within leaderFailoverBound, Nomad never runs
// more than 2 allocations of the deployment, the allocations live at the
// kill are adopted (not replaced), and the killed replica, restarted,
// follows the new leader and shows the deployment as it does.
//
// Each case has a cluster of its own: cluster.sh stops when both replicas
// it started are gone, and does not know of one RestartReplica started.
func TestHALeaderKilledMidBurst(t *testing.T) {
	for _, tc := range []struct {
		name string
		// held is how many requests are sent, and settle how long they
		// may travel, before the kill.
		held   int64
		settle time.Duration
	}{
		{"after the leader started the instances", 50, 500 * time.Millisecond},
		{"before the wake reached the leader", 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startHA(t, "--sim-startup", "3s", "--sim-tokens-per-second", "500")
			killMidBurst(t, h, tc.held, tc.settle)
		})
	}
}

// killMidBurst is one case of TestHALeaderKilledMidBurst.
func killMidBurst(t *testing.T, h *haCluster, held int64, settle time.Duration) {
	ld, fl, _ := h.roles(30 * time.Second)
	old, survivor := h.Replicas[ld], h.Replicas[fl]
	ctx := t.Context()
	d, err := h.api(survivor.API).Create(ctx, haCreate(uniqueName("failover"), 0, 2))
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	h.waitRoutable(d)
	watch := h.watchAllocs(jobOf(d), 2)

	b := e2e.StartBurst(ctx, e2e.BurstConfig{Client: e2e.OpenAI(h.Edge+"/v1/openai/", h.Token, 150*time.Second),
		Model: d.FullName, N: 200, Parallel: 50})
	if !waitFor(10*time.Second, time.Millisecond, func() bool { return b.Sent.Load() >= held }) {
		t.Fatalf("the burst did not start: %d requests sent in 10s", b.Sent.Load())
	}
	time.Sleep(settle)
	pid := h.ReplicaPID(old.N)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill the leader (pid %d): %v", pid, err)
	}
	killed := time.Now()
	if n := b.Answered.Load(); n > 0 {
		t.Errorf("%d requests answered before the kill: the deployment was not cold", n)
	}
	atKill := h.liveAllocs(jobOf(d))
	t.Logf("SIGKILLed the leader (replica %d, pid %d) with %d requests sent; Nomad had %d allocation(s): %v",
		old.N, pid, b.Sent.Load(), len(atKill), atKill)

	took, err := h.waitRole(survivor.API, e2e.RoleLeader, "", killed, leaderFailoverBound)
	if err != nil {
		t.Errorf("no new leader within the failover bound %s: %v", leaderFailoverBound, err)
	} else {
		t.Logf("HA: failover: replica %d leads %.1fs after the leader was SIGKILLed (bound %s)", survivor.N, took.Seconds(), leaderFailoverBound)
	}
	checkBurst(t, b.Wait(), 200, killed)
	h.checkAdopted(jobOf(d), atKill)
	h.rejoin(old, survivor, d.ID)
	most, over := watch()
	t.Logf("HA: at most %d running or pending allocations of the deployment (max_instances 2), from its creation to the rejoin", most)
	for _, o := range over {
		t.Errorf("more allocations than max_instances 2: %s", o)
	}
}

// checkBurst fails t for each of a burst's n requests that failed, and
// logs how long after killed the first was answered.
func checkBurst(t *testing.T, results []e2e.BurstResult, n int, killed time.Time) {
	t.Helper()
	failed, first := 0, time.Time{}
	for _, r := range results {
		switch {
		case r.Err != "":
			failed++
			if failed <= 5 {
				t.Errorf("request %d (stream %v): %s", r.I, r.Stream, r.Err)
			}
		case r.Done.After(killed) && (first.IsZero() || r.Done.Before(first)):
			first = r.Done
		}
	}
	if failed > 0 || len(results) != n {
		t.Errorf("%d of %d requests failed (%d sent)", failed, len(results), n)
	}
	if !first.IsZero() {
		t.Logf("HA: first 200 through Envoy %.1fs after the kill; the burst ended %.1fs after it",
			first.Sub(killed).Seconds(), time.Since(killed).Seconds())
	}
}

// rejoin restarts the killed replica old and checks it follows leader
// within 10 s and shows deployment id as leader does.
func (h *haCluster) rejoin(old, leader e2e.Replica, id string) {
	t := h.t
	lh, err := e2e.GetHealth(t.Context(), leader.API)
	if err != nil || lh.Role != e2e.RoleLeader {
		t.Fatalf("replica %d does not lead: %+v (%v)", leader.N, lh, err)
	}
	leaderID := lh.Leader
	restarted := time.Now()
	if _, err := h.RestartReplica(old.N); err != nil { // the cluster's Shutdown stops it
		t.Fatalf("restart replica %d: %v", old.N, err)
	}
	took, err := h.waitRole(old.API, e2e.RoleFollower, leaderID, restarted, 10*time.Second)
	if err != nil {
		t.Fatalf("the restarted replica does not follow the new leader %s: %v", leaderID, err)
	}
	t.Logf("HA: the restarted replica %d follows %s %.2fs after its restart", old.N, leaderID, took.Seconds())
	var a, b deploy.View
	if !waitFor(2*time.Second, 100*time.Millisecond, func() bool {
		a, err = h.api(leader.API).Get(t.Context(), id)
		if err != nil {
			return false
		}
		b, err = h.api(old.API).Get(t.Context(), id)
		return err == nil && a.Status == b.Status && a.Instances.Running == b.Instances.Running
	}) {
		t.Errorf("the restarted replica shows %s (%v), the leader %s", describe(b), err, describe(a))
	}
}

// TestHAGracefulHandover: the leader replica stopped with SIGTERM releases
// the lock at once: the other replica leads within handoverBound, a
// steady trickle of warm requests through Envoy keeps succeeding, and
// the deployment's allocation is adopted, not replaced.
func TestHAGracefulHandover(t *testing.T) {
	h := startHA(t, "--sim-startup", "300ms", "--sim-tokens-per-second", "500")
	ld, fl, _ := h.roles(30 * time.Second)
	old, survivor := h.Replicas[ld], h.Replicas[fl]
	ctx := t.Context()
	leaderAPI := h.api(old.API)
	d, err := leaderAPI.Create(ctx, haCreate(uniqueName("handover"), 1, 1))
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	var v deploy.View
	if !waitFor(60*time.Second, 100*time.Millisecond, func() bool {
		v, err = leaderAPI.Get(ctx, d.ID)
		return err == nil && v.Instances.Running == 1
	}) {
		t.Fatalf("the min_instances 1 deployment is not running within 60s: %s (%v)", describe(v), err)
	}
	h.waitRoutable(d)
	before := h.liveAllocs(jobOf(d))

	trickle := e2e.StartTrickle(ctx, e2e.OpenAI(h.Edge+"/v1/openai/", h.Token, 60*time.Second), d.FullName)
	time.Sleep(2 * time.Second)
	pid := h.ReplicaPID(old.N)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM the leader (pid %d): %v", pid, err)
	}
	stopped := time.Now()
	took, err := h.waitRole(survivor.API, e2e.RoleLeader, "", stopped, handoverBound)
	if err != nil {
		t.Errorf("no handover within %s of the leader's SIGTERM: %v", handoverBound, err)
	} else {
		t.Logf("HA: graceful handover: replica %d leads %.2fs after the leader's SIGTERM", survivor.N, took.Seconds())
	}
	if !waitFor(20*time.Second, 100*time.Millisecond, func() bool { return syscall.Kill(pid, 0) != nil }) {
		t.Errorf("the old leader (pid %d) still runs 20s after SIGTERM", pid)
	}
	time.Sleep(5 * time.Second) // the new leader adopts the instance under the trickle
	results := trickle()
	var after, failed int
	var slowest time.Duration
	for _, r := range results {
		if r.Start.After(stopped) {
			after++
		}
		slowest = max(slowest, r.Took)
		if r.Err != "" {
			failed++
			if failed <= 5 {
				t.Errorf("request sent %s after the SIGTERM failed: %s", r.Start.Sub(stopped).Round(time.Millisecond), r.Err)
			}
		}
	}
	t.Logf("HA: %d warm requests through Envoy during the handover (%d after the SIGTERM), %d failed, slowest %s",
		len(results), after, failed, slowest.Round(time.Millisecond))
	if after < 10 {
		t.Errorf("only %d requests after the SIGTERM: the test did not exercise the handover", after)
	}
	h.checkAdopted(jobOf(d), before)
	if now := h.liveAllocs(jobOf(d)); !slices.Equal(now, before) {
		t.Errorf("allocations after the handover %v, want the ones before it %v (adopted, not replaced)", now, before)
	}
}
