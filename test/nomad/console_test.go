package nomadtest

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/thawhq/thaw/test/e2e"
)

// TestConsoleThroughEnvoy: on the production topology (scripts/cluster.sh:
// Nomad, thaw server, two activators, Envoy at the edge) a user logs in to
// the web console at Envoy's listener (the edge's catch-all route to thaw's
// API serves it) and chats on the demo page of a deployment scaled to zero:
// the page says an instance is starting, then the answer streams in through
// Envoy (ext_authz, an activator holding the request through the cold
// start). No console error or CSP violation on the way.
func TestConsoleThroughEnvoy(t *testing.T) {
	needCluster(t)
	c := e2e.StartClusterT(t, e2e.ClusterConfig{Bin: thawBin, Dir: t.TempDir(),
		Args: []string{"--sim-startup", "3s", "--sim-tokens-per-second", "10"}})
	s := &server{t: t, base: c.Edge}
	name := uniqueName("console")
	r, err := s.doAs(c.Token, "POST", "/deploy/llm", map[string]any{
		"model_name": name, "gpu": "A100-80GB", "num_gpus": 1, "max_batch_size": 4,
		"hf": map[string]any{"repo": "org/model"}, "settings": map[string]any{"min_instances": 0, "max_instances": 1},
	})
	if err != nil || r.Status != 200 {
		t.Fatalf("create through the edge: %v %s", err, r)
	}
	var created struct {
		ID string `json:"deploy_id"`
	}
	if err := json.Unmarshal(r.Body, &created); err != nil || created.ID == "" {
		t.Fatalf("create: no deploy_id in %s", r)
	}
	admin := e2e.EnvoyAdmin{URL: c.EnvoyAdmin}
	stat := func(name string) int64 {
		n, err := admin.Stat(context.Background(), name)
		if err != nil {
			t.Fatalf("envoy stat %s: %v", name, err)
		}
		return n
	}
	apiBefore, actBefore := stat("cluster.thaw-api.upstream_rq_total"), stat("cluster.thaw-activator.upstream_rq_total")

	b := e2e.BrowserT(t, e2e.BrowserConfig{})
	p := b.NewPage(t, 3*time.Minute)
	p.Navigate(c.Edge + "/")
	p.WaitVisible("#login-form")
	p.SetValue("#login-token", c.Token)
	p.Click("#login-submit")
	p.WaitVisible("#whoami")
	p.CheckConsole()

	p.Navigate(c.Edge + "/dev/" + name)
	p.WaitVisible("#chat-form")
	p.SetValue("#max-tokens", "40")
	p.SetValue("#chat-input", "Hello through Envoy")
	p.Click("#chat-send")
	p.Until(10*time.Second, "#cold-state says an instance is starting", func() bool {
		return p.Visible("#cold-state") && strings.Contains(p.Text("#cold-state"), "starting an instance")
	})
	p.Screenshot("demo-cold-start")
	var first string
	p.Until(60*time.Second, "the answer starts streaming", func() bool {
		first = assistantText(p)
		return p.Attr("#chat", "data-state") == "streaming" && first != ""
	})
	p.Until(5*time.Second, "the answer grows", func() bool { return len(assistantText(p)) > len(first) })
	p.Screenshot("demo-envoy")
	p.Until(30*time.Second, `#chat[data-state="done"]`, func() bool { return p.Attr("#chat", "data-state") == "done" })
	if p.Visible("#cold-state") || p.Text("#chat-error") != "" {
		t.Errorf("after the answer: #cold-state still shows, or #chat-error says %q", p.Text("#chat-error"))
	}
	p.CheckConsole()

	if n := stat("cluster.thaw-api.upstream_rq_total") - apiBefore; n == 0 {
		t.Errorf("Envoy's catch-all route to thaw's API took none of the console's requests")
	}
	if n := stat("cluster.thaw-activator.upstream_rq_total") - actBefore; n == 0 {
		t.Errorf("no request reached an activator through Envoy: the chat did not take the edge's inference route")
	}
}

// assistantText is the text of the last assistant message on a demo page.
func assistantText(p *e2e.Page) string {
	return e2e.Eval[string](p, `(() => { const m = document.querySelectorAll("#messages .message.assistant");
  return m.length ? m[m.length - 1].textContent : ""; })()`)
}
