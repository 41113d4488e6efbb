package nomadtest

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/test/e2e"
)

// restartOutages are how long the Nomad agent stays down in
// TestServerNomadRestart, one restart each: shorter than the lock's TTL
// (the leader's renewals fail, then succeed again: it leads on), and
// longer (its term ends, and no replica can lead until Nomad is back,
// which still counts the lock as the old leader's).
var restartOutages = []time.Duration{5 * time.Second, 15 * time.Second}

// afterRestart is how long the warm requests go on after Nomad is back:
// long enough for its client to have restored the allocation (or reported
// it dead).
const afterRestart = 8 * time.Second

// restartIdle is the replicas' --idle-timeout in TestServerNomadRestart:
// short, so the deployment scales to zero soon after its traffic stops.
const restartIdle = 15 * time.Second

// leaderAgainBound is how soon after Nomad is back the replicas must agree
// on one leader. The leader of before the outage gets its hold back by
// renewing it (0.1-0.2 s measured); waiting for the restarted Nomad to
// free it instead took 2 x TTL + the lock delay (20 s measured).
const leaderAgainBound = 10 * time.Second

// TestServerNomadRestart: two thaw server replicas (--store nomad, one
// Redis) run against a persistent Nomad agent (server and client in one,
// its state on disk, not the shared -dev agent), which is restarted under
// them twice (restartOutages) with a deployment warm. While Nomad is down
// both replicas' APIs answer and warm requests keep succeeding; once it is
// back the replicas agree on one leader within leaderAgainBound, the
// deployment is still there with its allocation, it scales to zero and
// wakes again on a request. Throughout, Nomad never runs more than
// max_instances of it, no two replicas say they lead at once, and no thaw
// process exits.
func TestServerNomadRestart(t *testing.T) {
	needCluster(t)
	agent, err := e2e.StartNomad(e2e.NomadConfig{GPUs: a100 + ":2", Dir: t.TempDir(), Persistent: true})
	if err != nil {
		t.Fatalf("persistent Nomad agent: %v", err)
	}
	t.Cleanup(func() {
		if err := agent.Stop(); err != nil {
			t.Errorf("stop the persistent agent: %v", err)
		}
		if t.Failed() {
			t.Logf("nomad agent output (tail):\n%s", agent.Out.Tail(16<<10))
		}
	})
	nc, err := api.NewClient(&api.Config{Address: agent.URL})
	if err != nil {
		t.Fatal(err)
	}
	redis := startRedis(t)
	var servers []*server
	for range 2 {
		servers = append(servers, startServer(t, serverOpts{redisAddr: redis, nomadAddr: agent.URL, idleTimeout: restartIdle}))
	}
	h := replicasOf(t, nc, servers)
	ld, _, _ := h.roles(30 * time.Second)
	d := servers[ld].create(uniqueName("restart"), "A100-80GB", 1, 4, 0, 2)
	watch := h.watchAllocs(jobOf(d), 2)
	roles := watchRoles(t, servers)
	defer roles.stop()

	if !waitFor(2*time.Second, 50*time.Millisecond, func() bool {
		_, err := servers[1-ld].api().Get(t.Context(), d.ID)
		return err == nil
	}) {
		t.Fatalf("the follower does not know the deployment created on the leader within 2s")
	}
	woke := time.Now()
	if msg := checkChat(servers[1-ld].chat(d.FullName, 5)); msg != "" {
		t.Fatalf("the request to the follower that wakes the deployment from zero: %s", msg)
	}
	t.Logf("NOMAD-RESTART: woke from zero in %.1fs before the restarts", time.Since(woke).Seconds())
	for _, down := range restartOutages {
		t.Logf("NOMAD-RESTART: --- Nomad down %s", down)
		before := h.liveAllocs(jobOf(d))
		back := restartUnderLoad(t, agent, servers, d, down)
		recovered(t, h, roles, servers, d, back, before)
	}

	most, over := watch()
	t.Logf("NOMAD-RESTART: at most %d running or pending allocations of the deployment (max_instances 2)", most)
	for _, o := range over {
		t.Errorf("more allocations than max_instances 2: %s", o)
	}
	for _, r := range roles.stop() {
		t.Errorf("%s", r)
	}
	for i, s := range servers {
		for _, l := range leaseLines(s.th.Out.String()) {
			t.Logf("NOMAD-RESTART: replica %d said: %s", i+1, l)
		}
		if s.th.Exited() {
			t.Errorf("thaw server replica %d exited: %v", i+1, s.th.Err())
		} else if _, err := e2e.GetHealth(t.Context(), s.base); err != nil {
			t.Errorf("thaw server replica %d: %v", i+1, err)
		}
	}
}

// replicasOf is the HA tests' view (roles, allocation watch) of servers
// run against the Nomad agent nc talks to.
func replicasOf(t *testing.T, nc *api.Client, servers []*server) *haCluster {
	c := &e2e.Cluster{}
	for i, s := range servers {
		c.Replicas = append(c.Replicas, e2e.Replica{N: i + 1, PID: s.th.PID(), API: s.base})
	}
	return &haCluster{Cluster: c, t: t, nomad: nc}
}

// restartUnderLoad restarts the agent (halted down) while warm requests
// go to both replicas in turn and both replicas' deploy lists are read
// every 200 ms, until afterRestart after it is back; every one must
// succeed. It returns when the agent was back.
func restartUnderLoad(t *testing.T, agent *e2e.Nomad, servers []*server, d deploy.View, down time.Duration) (back time.Time) {
	load := startOutageLoad(t.Context(), servers, d.FullName)
	time.Sleep(time.Second)
	halted := time.Now()
	if err := agent.Halt(); err != nil {
		t.Fatalf("halt Nomad: %v", err)
	}
	t.Logf("NOMAD-RESTART: Nomad agent stopped (SIGINT) in %.1fs", time.Since(halted).Seconds())
	time.Sleep(down)
	started := time.Now()
	if err := agent.Resume(); err != nil {
		t.Fatalf("resume Nomad: %v", err)
	}
	back = time.Now()
	t.Logf("NOMAD-RESTART: Nomad agent down %.1fs; ready again (node and GPUs, client registered) %.1fs after its start",
		back.Sub(halted).Seconds(), back.Sub(started).Seconds())
	time.Sleep(afterRestart)
	r := load()
	t.Logf("NOMAD-RESTART: around the outage: %d deploy list reads of both replicas, %d warm chats (%d answered while Nomad was down)",
		r.lists, len(r.chats), r.chatsIn(halted, back))
	for i, f := range r.failures {
		if i < 10 {
			t.Errorf("%s", f)
		}
	}
	if len(r.failures) > 10 {
		t.Errorf("... %d failures in all", len(r.failures))
	}
	if r.chatsIn(halted, back) < 5 {
		t.Errorf("only %d warm chats answered while Nomad was down: the outage was not exercised", r.chatsIn(halted, back))
	}
	if first, ok := r.firstChatAfter(back); ok {
		t.Logf("NOMAD-RESTART: first warm 200 %.2fs after Nomad was back", first.Sub(back).Seconds())
	}
	return back
}

// recovered checks the replicas once Nomad is back: one leader within
// leaderAgainBound, the deployment held on both, the allocation live
// before the restart still running (adopted, not replaced), a scale to
// zero once idle, and a wake from zero through the follower.
func recovered(t *testing.T, h *haCluster, roles *roleLog, servers []*server, d deploy.View, back time.Time, before []string) {
	var at time.Time
	var id string
	var ok bool
	if !waitFor(time.Until(back.Add(leaderAgainBound)), 200*time.Millisecond, func() bool { at, id, ok = roles.agreedSince(back); return ok }) {
		t.Fatalf("the replicas did not agree on one leader within %s of Nomad being back", leaderAgainBound)
	}
	ld := slices.IndexFunc(servers, func(s *server) bool {
		h, err := e2e.GetHealth(t.Context(), s.base)
		return err == nil && h.Leader == id && h.Role == e2e.RoleLeader
	})
	if ld < 0 {
		t.Fatalf("no replica says it is %s, the leader both agreed on", id)
	}
	t.Logf("NOMAD-RESTART: one leader (replica %d, %s) agreed on %.1fs after Nomad was back", ld+1, id, at.Sub(back).Seconds())
	for i, s := range servers {
		got := s.get(d.ID)
		if got.Settings != d.Settings || got.FullName != d.FullName {
			t.Errorf("replica %d holds %+v after the restart, want the deployment as created %+v", i+1, got, d)
		}
	}
	after := h.liveAllocs(jobOf(d))
	t.Logf("NOMAD-RESTART: allocations before the restart %v, after %v", before, after)
	h.checkAdopted(jobOf(d), before)

	idle := time.Now()
	servers[ld].waitDeploy(d.ID, restartIdle+45*time.Second, "scaled to zero", func(v deploy.View) bool {
		return v.Instances.Running == 0 && v.Instances.Pending == 0
	})
	if !waitFor(30*time.Second, 200*time.Millisecond, func() bool { return len(h.liveAllocs(jobOf(d))) == 0 }) {
		t.Fatalf("the deployment says 0 instances but Nomad still runs %v", h.liveAllocs(jobOf(d)))
	}
	t.Logf("NOMAD-RESTART: scaled to zero %.1fs after its traffic stopped (--idle-timeout %s)", time.Since(idle).Seconds(), restartIdle)
	woke := time.Now()
	if msg := checkChat(servers[1-ld].chat(d.FullName, 5)); msg != "" {
		t.Fatalf("wake from zero through the follower after the restart: %s", msg)
	}
	t.Logf("NOMAD-RESTART: woke from zero through the follower in %.1fs", time.Since(woke).Seconds())
}

// outageLoad is what startOutageLoad saw.
type outageLoad struct {
	lists    int
	chats    []time.Time // when each successful chat was answered
	failures []string
}

// chatsIn counts the chats answered between from and to.
func (o outageLoad) chatsIn(from, to time.Time) int {
	n := 0
	for _, c := range o.chats {
		if c.After(from) && c.Before(to) {
			n++
		}
	}
	return n
}

// firstChatAfter is when the first chat after t was answered.
func (o outageLoad) firstChatAfter(t time.Time) (time.Time, bool) {
	i := slices.IndexFunc(o.chats, func(c time.Time) bool { return c.After(t) })
	if i < 0 {
		return time.Time{}, false
	}
	return o.chats[i], true
}

// startOutageLoad sends, until stop is called, chats to model on each of
// servers in turn, one after the other, and reads each one's deploy list
// every 200 ms. stop returns what it saw.
func startOutageLoad(ctx context.Context, servers []*server, model string) (stop func() outageLoad) {
	ctx, cancel := context.WithCancel(ctx)
	var (
		mu  sync.Mutex // mu guards out.
		out outageLoad
		wg  sync.WaitGroup
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		out.failures = append(out.failures, time.Now().Format("15:04:05.000 ")+fmt.Sprintf(format, args...))
	}
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			n := i % len(servers)
			if msg := checkChat(servers[n].chat(model, 5)); msg != "" {
				fail("warm chat to replica %d: %s", n+1, msg)
			} else {
				mu.Lock()
				out.chats = append(out.chats, time.Now())
				mu.Unlock()
			}
			sleepCtx(ctx, 100*time.Millisecond)
		}
	})
	wg.Go(func() {
		for ctx.Err() == nil {
			for n, s := range servers {
				if r, err := s.do(http.MethodGet, "/deploy/list", nil); err != nil || r.Status != http.StatusOK {
					fail("GET /deploy/list on replica %d: %v %v", n+1, r, err)
				}
			}
			mu.Lock()
			out.lists++
			mu.Unlock()
			sleepCtx(ctx, 200*time.Millisecond)
		}
	})
	return func() outageLoad {
		cancel()
		wg.Wait()
		return out
	}
}

// roleSample is what every replica's /healthz said at one moment.
type roleSample struct {
	at     time.Time
	health []e2e.Health // Role "" for a replica that did not answer
}

// agreed says whether exactly one replica leads and every other follows
// it, and which.
func (r roleSample) agreed() (string, bool) {
	i := slices.IndexFunc(r.health, func(h e2e.Health) bool { return h.Role == e2e.RoleLeader })
	if i < 0 || r.health[i].Leader == "" {
		return "", false
	}
	id := r.health[i].Leader
	for _, h := range r.health {
		if h.Leader != id || (h.Role != e2e.RoleFollower && h.Role != e2e.RoleLeader) {
			return "", false
		}
	}
	return id, true
}

// roleLog is watchRoles's record.
type roleLog struct {
	mu      sync.Mutex // mu guards samples.
	samples []roleSample
	stop    func() (twice []string)
}

// agreedSince returns the first sample at or after from where the
// replicas agreed on one leader.
func (l *roleLog) agreedSince(from time.Time) (time.Time, string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.samples {
		if id, ok := s.agreed(); ok && !s.at.Before(from) {
			return s.at, id, true
		}
	}
	return time.Time{}, "", false
}

// watchRoles polls every replica's /healthz every 200 ms until stop is
// called, logs each change of what a replica says, and records each
// sample. stop (idempotent) returns each moment where two replicas said
// they led at once.
func watchRoles(t *testing.T, servers []*server) *roleLog {
	ctx, cancel := context.WithCancel(t.Context())
	l := &roleLog{}
	var twice []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		last := make([]string, len(servers))
		for ctx.Err() == nil {
			s := roleSample{at: time.Now()}
			leaders := 0
			for i, srv := range servers {
				h, err := e2e.GetHealth(ctx, srv.base)
				now := fmt.Sprintf("role=%s leader=%s", h.Role, h.Leader)
				if err != nil {
					h, now = e2e.Health{}, "error: "+err.Error()
				}
				if now != last[i] && ctx.Err() == nil {
					t.Logf("NOMAD-RESTART: %s replica %d /healthz: %s", time.Now().Format("15:04:05.000"), i+1, now)
					last[i] = now
				}
				if h.Role == e2e.RoleLeader {
					leaders++
				}
				s.health = append(s.health, h)
			}
			if leaders > 1 {
				twice = append(twice, fmt.Sprintf("%s: %d replicas say they lead", s.at.Format("15:04:05.000"), leaders))
			}
			l.mu.Lock()
			l.samples = append(l.samples, s)
			l.mu.Unlock()
			sleepCtx(ctx, 200*time.Millisecond)
		}
	}()
	l.stop = func() []string {
		cancel()
		<-done
		return twice
	}
	return l
}

// sleepCtx sleeps d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// leaseLines are the lines of a thaw server's output about its
// leadership, for the test's log.
func leaseLines(out string) []string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "lease:") {
			lines = append(lines, l)
		}
	}
	return lines
}
