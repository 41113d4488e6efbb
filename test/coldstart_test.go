package test

import (
	"context"
	"net/http"
	"sort"
	"sync"
	"testing"
	"time"
)

// burstResult is one request of a burst.
type burstResult struct {
	resp response
	err  error
	end  time.Time
}

// burstStats is what polling the deploy object saw during a burst.
type burstStats struct {
	maxRunning  int
	maxInFleet  int // running + pending
	maxDesired  int
	polls       int
	pollErrors  int
	observation string // the object at maxInFleet
}

// burst fires n concurrent non-streaming chat completions at model and, at
// the same time, polls GET /deploy/{id} every 25ms. Results are sorted by
// completion time.
func burst(t *testing.T, p *thawProc, id, model string, n, maxTokens int) ([]burstResult, burstStats) {
	t.Helper()
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		results = make([]burstResult, n)
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			r, err := p.doCtx(context.Background(), http.MethodPost, "/v1/openai/chat/completions", devToken, chatBody(model, maxTokens, false))
			results[i] = burstResult{resp: r, err: err, end: time.Now()}
		}()
	}
	done := make(chan struct{})
	statsc := make(chan burstStats)
	go func() {
		var s burstStats
		tick := time.NewTicker(25 * time.Millisecond)
		defer tick.Stop()
		for {
			d, err := p.api(devToken).Get(context.Background(), id)
			s.polls++
			if err != nil {
				s.pollErrors++
			} else {
				if d.Instances.Running+d.Instances.Pending > s.maxInFleet {
					s.maxInFleet = d.Instances.Running + d.Instances.Pending
					s.observation = instancesOf(d)
				}
				s.maxRunning = max(s.maxRunning, d.Instances.Running)
				s.maxDesired = max(s.maxDesired, d.Instances.Desired)
			}
			select {
			case <-done:
				statsc <- s
				return
			case <-tick.C:
			}
		}
	}()
	close(start)
	wg.Wait()
	close(done)
	stats := <-statsc
	sort.Slice(results, func(i, j int) bool { return results[i].end.Before(results[j].end) })
	return results, stats
}

// checkBurst asserts that every request of a burst got a valid answer, that
// the first answer says it waited for a cold start, and that the fleet never
// went over maxInstances.
func checkBurst(t *testing.T, results []burstResult, stats burstStats, maxTokens, maxInstances int, simStartup time.Duration) {
	t.Helper()
	bad := 0
	for i, r := range results {
		msg := ""
		if r.err != nil {
			msg = "transport error: " + r.err.Error()
		} else {
			msg = checkChat(r.resp, maxTokens)
		}
		if msg != "" {
			bad++
			if bad <= 5 {
				t.Errorf("request %d of %d: %s", i+1, len(results), msg)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d requests lost or invalid", bad, len(results))
	}
	withHeader := 0
	for _, r := range results {
		if r.resp.Header.Get(coldStartHeader) != "" {
			withHeader++
		}
	}
	first := results[0].resp
	v := first.Header.Get(coldStartHeader)
	d, ok := parseColdStart(v)
	switch {
	case v == "":
		t.Errorf("first answer has no %s header (%d of %d answers had one); headers: %v", coldStartHeader, withHeader, len(results), first.Header)
	case !ok:
		t.Errorf("%s: %q is not a duration", coldStartHeader, v)
	case d < simStartup/2:
		t.Errorf("%s: %v, but the simulator alone takes %v to start", coldStartHeader, d, simStartup)
	}
	t.Logf("burst: %d answers, %d with %s (first %q); polls %d (errors %d), max running %d, max running+pending %d (%s), max desired %d",
		len(results), withHeader, coldStartHeader, v, stats.polls, stats.pollErrors, stats.maxRunning, stats.maxInFleet, stats.observation, stats.maxDesired)
	if stats.pollErrors > 0 {
		t.Errorf("GET /deploy/{id} failed %d of %d times during the burst", stats.pollErrors, stats.polls)
	}
	if stats.maxInFleet > maxInstances || stats.maxDesired > maxInstances {
		t.Errorf("instances went over max_instances %d: max running+pending %d (%s), max desired %d",
			maxInstances, stats.maxInFleet, stats.observation, stats.maxDesired)
	}
	if stats.maxInFleet < maxInstances {
		t.Errorf("a burst far over one instance's batch never scaled toward max_instances %d: max running+pending %d", maxInstances, stats.maxInFleet)
	}
}

// coldStartScenario creates a deployment at zero, fires n concurrent
// requests and checks that none is lost.
func coldStartScenario(t *testing.T, p *thawProc, n int) {
	const maxTokens, maxInstances = 4, 2
	name := uniqueName("cold")
	d := p.create(t, devToken, llmRequest(name, "A100-80GB", 1, 8, 0, maxInstances))
	if got := d.Instances.Running; got != 0 {
		t.Errorf("new deployment with min_instances 0: running %d, want 0", got)
	}
	results, stats := burst(t, p, d.ID, "dev/"+name, n, maxTokens)
	checkBurst(t, results, stats, maxTokens, maxInstances, 500*time.Millisecond)

	after := p.get(t, d.ID)
	if after.Instances.Running < 1 {
		t.Errorf("after the burst: %s, want running >= 1", instancesOf(after))
	}
	// A warm request goes straight through: no cold start to report.
	r := p.chat(t, "dev/"+name, maxTokens)
	if msg := checkChat(r, maxTokens); msg != "" {
		t.Fatalf("warm request: %s", msg)
	}
	if v := r.Header.Get(coldStartHeader); v != "" {
		if d, ok := parseColdStart(v); !ok || d > 250*time.Millisecond {
			t.Errorf("warm request (instance running) reports a cold start of %q", v)
		}
	}
}

// TestColdStartBurst: 200 concurrent requests at a deployment scaled to
// zero are all held through the cold start and answered; none is lost and
// the fleet never exceeds max_instances.
func TestColdStartBurst(t *testing.T) {
	p := startThaw(t, thawOpts{})
	coldStartScenario(t, p, 200)
}

// TestRealRedis runs the cold start against a real redis-server given with
// --redis-addr, and checks thaw really keeps its counts there.
func TestRealRedis(t *testing.T) {
	addr := startRedis(t)
	p := startThaw(t, thawOpts{RedisAddr: addr})
	before := redisCommands(t, addr)
	coldStartScenario(t, p, 50)
	after := redisCommands(t, addr)
	t.Logf("redis total_commands_processed: %d -> %d", before, after)
	if after-before < 50 {
		t.Errorf("50 requests made only %d Redis commands: is thaw using --redis-addr %s?", after-before, addr)
	}
}
