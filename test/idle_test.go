package test

import (
	"net/http"
	"testing"
	"time"

	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/meter"
	"github.com/thawhq/thaw/test/e2e"
)

// TestIdleAlert: a deployment with min_instances 1 that nobody calls is
// idle from its instance's start, although thaw warmed the instance up
// with a request of its own: with --idle-alert 3s its owner gets a
// deployment_idle event (and webhook) within seconds, GET /usage shows 0
// requests for it, and its stats no request. One chat afterwards makes
// exactly 1 request.
func TestIdleAlert(t *testing.T) {
	t.Parallel()
	p := startThaw(t, thawOpts{Args: []string{"--idle-alert=3s", "--spending-check-interval=500ms", "--stats-interval=1s"}})
	hooks := e2e.ReceiveWebhooks(t, "idle-secret")
	if r := p.do(t, http.MethodPut, "/account", devToken, map[string]any{
		"webhook_url": hooks.URL + "/thaw", "webhook_secret": "idle-secret"}); r.Status != http.StatusOK {
		t.Fatalf("PUT /account: %s", r)
	}
	d := p.create(t, devToken, llmRequest("forgotten", "A100-80GB", 1, 4, 1, 1))
	p.waitDeploy(t, d.ID, 30*time.Second, "instance running", func(d deploy.View) bool { return d.Instances.Running == 1 })
	ready := time.Now()

	// Running 3s with no request, checked every 500ms: told within
	// seconds of its start.
	var idle meter.Event
	if !waitFor(10*time.Second, 100*time.Millisecond, func() bool {
		for _, ev := range p.events(t) {
			if ev.Type == "deployment_idle" && ev.DeployID == d.ID {
				idle = ev
				return true
			}
		}
		return false
	}) {
		t.Fatalf("no deployment_idle event for %s within 10s of its instance getting ready; events: %+v", d.ID, p.events(t))
	}
	t.Logf("idle event %v after the instance got ready: %s", time.Since(ready).Round(time.Millisecond), idle.Message)
	if !waitFor(5*time.Second, 50*time.Millisecond, func() bool { return len(hooks.Posts()) > 0 }) {
		t.Errorf("no webhook for the idle deployment (%d with a bad signature)", hooks.Bad())
	} else if post := hooks.Posts()[0]; post.Event != "deployment_idle" || post.Body.Type != "deployment_idle" {
		t.Errorf("webhook %+v, want a deployment_idle event", post)
	}

	// Seconds of scrapes of the instance after its warm-up: no request.
	if n := p.requests(t, d.ID); n != 0 {
		t.Errorf("GET /usage: %d requests for the deployment nobody called, want 0 (thaw's warm-up is no request)", n)
	}
	if s := p.stats(t, d.ID, "step=1s").sum(); s.requests || s.tokens {
		t.Errorf("stats of the deployment nobody called show requests or tokens: %+v", s)
	}

	if r := p.chat(t, "dev/forgotten", 4); r.Status != http.StatusOK {
		t.Fatalf("chat: %s", r)
	}
	if !waitFor(10*time.Second, 100*time.Millisecond, func() bool { return p.requests(t, d.ID) > 0 }) {
		t.Fatal("GET /usage never counted the chat")
	}
	time.Sleep(2 * time.Second) // more scrapes: nothing more
	if n := p.requests(t, d.ID); n != 1 {
		t.Errorf("GET /usage: %d requests after one chat, want 1", n)
	}
	if !waitFor(5*time.Second, 200*time.Millisecond, func() bool { return p.stats(t, d.ID, "step=1s").sum().requests }) {
		t.Error("stats never showed the chat")
	}
}

// events are dev's account events (GET /account/events).
func (p *thawProc) events(t *testing.T) []meter.Event {
	t.Helper()
	r := p.do(t, http.MethodGet, "/account/events", devToken, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET /account/events: %s", r)
	}
	var v struct {
		Events []meter.Event `json:"events"`
	}
	r.decode(t, &v)
	return v.Events
}

// requests is what GET /usage says deployment id served.
func (p *thawProc) requests(t *testing.T, id string) int64 {
	t.Helper()
	r := p.do(t, http.MethodGet, "/usage", devToken, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET /usage: %s", r)
	}
	var rep e2e.UsageReport
	r.decode(t, &rep)
	var n int64
	for _, it := range rep.Items {
		if it.DeployID == id {
			n += it.Requests
		}
	}
	return n
}
