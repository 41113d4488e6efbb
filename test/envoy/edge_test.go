package envoy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/routing"
)

func TestEnvoyStateOfTheWorld(t *testing.T) {
	t.Parallel()
	e := startEdge(t, false)
	checkRouting(t, e)
	t.Run("long", func(t *testing.T) {
		t.Run("held past 15s then served", func(t *testing.T) { t.Parallel(); checkLongHold(t, e) })
		t.Run("stream outlives 15s and a drain", func(t *testing.T) { t.Parallel(); checkDrain(t, e) })
	})
	checkNoNACK(t, e)
}

func TestEnvoyDelta(t *testing.T) {
	t.Parallel()
	e := startEdge(t, true)
	checkRouting(t, e)
	checkNoNACK(t, e)
}

func chat(model string) string {
	return `{"model":"` + model + `","messages":[{"role":"user","content":"hi"}],"max_tokens":4}`
}

type openAIError struct {
	Status int
	Code   string
	Type   string
}

func errorOf(t *testing.T, r reply) openAIError {
	t.Helper()
	var e struct{ Error struct{ Code, Type string } }
	if err := json.Unmarshal([]byte(r.body), &e); err != nil {
		t.Fatalf("status %d body is not OpenAI's error JSON: %q", r.status, r.body)
	}
	return openAIError{r.status, e.Error.Code, e.Error.Type}
}

// checkRouting: warm traffic bypasses the activator, cold traffic is held by
// it, thaw answers what is not inference and every denial.
func checkRouting(t *testing.T, e *edge) {
	warm := e.startInstance(t, "alice/warm", 1000)
	e.waitRoutable(t, "d-warm")

	t.Run("warm request bypasses the activator", func(t *testing.T) {
		act, sim := e.activator.n.Load(), warm.n.Load()
		before := e.stat(t, "cluster.deploy-d-warm.upstream_rq_total")
		for _, path := range []string{"/v1/chat/completions", "/v1/openai/chat/completions"} {
			r := e.post(t, path, "tok-alice", chat("alice/warm"))
			if r.status != http.StatusOK || !strings.Contains(r.body, `"alice/warm"`) {
				t.Fatalf("POST %s: %d %s", path, r.status, r.body)
			}
		}
		r := e.post(t, "/v1/openai/completions", "tok-alice", `{"model":"alice/warm","prompt":"hi","max_tokens":3}`)
		if r.status != http.StatusOK {
			t.Fatalf("completions: %d %s", r.status, r.body)
		}
		got := map[string]int64{"activator": e.activator.n.Load() - act, "instance": warm.n.Load() - sim}
		if diff := cmp.Diff(map[string]int64{"activator": 0, "instance": 3}, got); diff != "" {
			t.Errorf("requests received (-want +got):\n%s", diff)
		}
		if n := e.stat(t, "cluster.deploy-d-warm.upstream_rq_total") - before; n != 3 {
			t.Errorf("envoy: cluster deploy-d-warm upstream_rq_total grew by %d, want 3", n)
		}
		if n := e.stat(t, "cluster.thaw-activator.upstream_rq_total"); n > 0 {
			t.Errorf("envoy: %d requests to the activator cluster", n)
		}
	})

	t.Run("cold request is held by the activator then served", func(t *testing.T) {
		act := e.activator.n.Load()
		done := make(chan reply, 1)
		go func() { done <- e.post(t, "/v1/chat/completions", "tok-alice", chat("alice/cold")) }()
		waitHeld(t, e, "d-cold", 1)
		cold := e.startInstance(t, "alice/cold", 1000)
		r := <-done
		if r.status != http.StatusOK || r.header.Get(routing.ColdStartHeader) == "" {
			t.Fatalf("held request: %d %v %s", r.status, r.header, r.body)
		}
		if n := e.activator.n.Load() - act; n != 1 {
			t.Errorf("activator got %d requests, want 1", n)
		}
		// Once Envoy has the instance, the next request goes direct.
		e.waitRoutable(t, "d-cold")
		act, inst := e.activator.n.Load(), cold.n.Load()
		if r := e.post(t, "/v1/chat/completions", "tok-alice", chat("alice/cold")); r.status != http.StatusOK {
			t.Fatalf("warm again: %d %s", r.status, r.body)
		}
		if a, i := e.activator.n.Load()-act, cold.n.Load()-inst; a != 0 || i != 1 {
			t.Errorf("after ready: activator +%d, instance +%d; want +0, +1", a, i)
		}
	})

	t.Run("names only thaw knows go through the activator", func(t *testing.T) {
		act, inst := e.activator.n.Load(), warm.n.Load()
		r := e.post(t, "/v1/openai/chat/completions", "tok-alice", chat("deploy_id:d-warm"))
		if r.status != http.StatusOK || !strings.Contains(r.body, `"alice/warm"`) {
			t.Fatalf("deploy_id form: %d %s", r.status, r.body)
		}
		r = e.post(t, "/v1/inference/alice/warm", "tok-alice", `{"input":"hi","max_new_tokens":3}`)
		var native struct {
			Results []struct {
				GeneratedText string `json:"generated_text"`
			} `json:"results"`
		}
		if r.status != http.StatusOK || json.Unmarshal([]byte(r.body), &native) != nil || len(native.Results) != 1 {
			t.Fatalf("native path: %d %s", r.status, r.body)
		}
		if a, i := e.activator.n.Load()-act, warm.n.Load()-inst; a != 2 || i != 2 {
			t.Errorf("activator +%d, instance +%d; want +2, +2", a, i)
		}
	})

	t.Run("large bodies", func(t *testing.T) {
		long := strings.Repeat("x", 2<<20) // past the 64 KiB authz cut and Envoy's 1 MiB buffers
		// "model" first: Envoy's partial body names it, the request goes direct.
		act, inst := e.activator.n.Load(), warm.n.Load()
		r := e.post(t, "/v1/chat/completions", "tok-alice", `{"model":"alice/warm","max_tokens":2,"messages":[{"role":"user","content":"`+long+`"}]}`)
		if r.status != http.StatusOK {
			t.Fatalf("model first: %d %s", r.status, r.body)
		}
		if a, i := e.activator.n.Load()-act, warm.n.Load()-inst; a != 0 || i != 1 {
			t.Errorf("model first: activator +%d, instance +%d; want +0, +1", a, i)
		}
		// "model" past the cut: the activator reads the whole body.
		act, inst = e.activator.n.Load(), warm.n.Load()
		r = e.post(t, "/v1/chat/completions", "tok-alice", `{"max_tokens":2,"messages":[{"role":"user","content":"`+long+`"}],"model":"alice/warm"}`)
		if r.status != http.StatusOK {
			t.Fatalf("model last: %d %s", r.status, r.body)
		}
		if a, i := e.activator.n.Load()-act, warm.n.Load()-inst; a != 1 || i != 1 {
			t.Errorf("model last: activator +%d, instance +%d; want +1, +1", a, i)
		}
		// ... which still checks ownership.
		r = e.post(t, "/v1/chat/completions", "tok-bob", `{"messages":[{"role":"user","content":"`+long+`"}],"model":"alice/warm"}`)
		if diff := cmp.Diff(openAIError{404, "model_not_found", "not_found_error"}, errorOf(t, r)); diff != "" {
			t.Errorf("another user's model past the cut (-want +got):\n%s", diff)
		}
	})

	t.Run("denials come from thaw and reach no model server", func(t *testing.T) {
		inst := warm.n.Load()
		tests := []struct {
			name, path, token, body string
			headers                 []string
			want                    openAIError
		}{
			{"no token", "/v1/chat/completions", "", chat("alice/warm"), nil,
				openAIError{401, "missing_token", "authentication_error"}},
			{"bad token", "/v1/chat/completions", "tok-eve", chat("alice/warm"), nil,
				openAIError{401, "invalid_token", "authentication_error"}},
			{"unknown model", "/v1/chat/completions", "tok-alice", chat("alice/nope"), nil,
				openAIError{404, "model_not_found", "not_found_error"}},
			{"another user's model", "/v1/openai/chat/completions", "tok-bob", chat("alice/warm"), nil,
				openAIError{404, "model_not_found", "not_found_error"}},
			{"another user's model, native", "/v1/inference/alice/warm", "tok-bob", `{"input":"x"}`, nil,
				openAIError{404, "model_not_found", "not_found_error"}},
			{"routing headers sent by the client", "/v1/chat/completions", "tok-bob", chat("alice/warm"),
				[]string{routing.DeployIDHeader, "d-warm", routing.RouteHeader, routing.Direct},
				openAIError{404, "model_not_found", "not_found_error"}},
			{"missing model", "/v1/chat/completions", "tok-alice", `{"messages":[]}`, nil,
				openAIError{400, "missing_model", "invalid_request_error"}},
		}
		for _, tc := range tests {
			r := e.post(t, tc.path, tc.token, tc.body, tc.headers...)
			if diff := cmp.Diff(tc.want, errorOf(t, r)); diff != "" {
				t.Errorf("%s (-want +got):\n%s", tc.name, diff)
			}
			if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("%s: Content-Type %q", tc.name, ct)
			}
		}
		// bob's own model with alice's routing headers stays bob's: held
		// for bob's deployment by the activator, not sent to alice's.
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.url+"/v1/chat/completions", strings.NewReader(chat("bob/bobs")))
			req.Header.Set("Authorization", "Bearer tok-bob")
			req.Header.Set(routing.DeployIDHeader, "d-warm")
			req.Header.Set(routing.RouteHeader, routing.Direct)
			resp, err := e.client.Do(req)
			if err == nil {
				resp.Body.Close()
			}
			done <- err
		}()
		waitHeld(t, e, "d-bobs", 1)
		cancel()
		<-done
		waitHeld(t, e, "d-bobs", 0)
		if n := warm.n.Load() - inst; n != 0 {
			t.Errorf("alice's instance got %d denied requests", n)
		}
	})

	t.Run("thaw's API answers through the edge", func(t *testing.T) {
		resp, err := e.client.Get(e.url + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("/healthz: %d", resp.StatusCode)
		}
		resp, err = e.client.Get(e.url + "/deploy/nope")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		_, _ = bufio.NewReader(resp.Body).WriteTo(&b)
		if diff := cmp.Diff(openAIError{404, "not_found", "not_found_error"}, errorOf(t, reply{resp.StatusCode, resp.Header, b.String()})); diff != "" {
			t.Errorf("unknown path (-want +got):\n%s", diff)
		}
	})
}

// waitHeld waits until the activator holds n requests of the deployment.
func waitHeld(t *testing.T, e *edge, deployID string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e.waitFor(ctx, t, "request held", func() bool { return e.px.Counts()[deployID].Held == n })
}

// longer than Envoy's default route timeout (15 s).
const pastRouteTimeout = 16 * time.Second

// checkLongHold: a request held longer than Envoy's default route timeout
// is served, not cut.
func checkLongHold(t *testing.T, e *edge) {
	done := make(chan reply, 1)
	start := time.Now()
	go func() { done <- e.post(t, "/v1/chat/completions", "tok-bob", chat("bob/bobs")) }()
	waitHeld(t, e, "d-bobs", 1)
	time.Sleep(pastRouteTimeout - time.Since(start))
	e.startInstance(t, "bob/bobs", 1000)
	r := <-done
	if r.status != http.StatusOK {
		t.Fatalf("after %v held: %d %s", time.Since(start).Round(time.Second), r.status, r.body)
	}
}

// checkDrain: an SSE stream longer than 15 s is not cut, and when its
// instance leaves load balancing mid-stream, Drained waits for the stream.
func checkDrain(t *testing.T, e *edge) {
	const tps = 5
	e.startInstance(t, "alice/slow", tps)
	e.waitRoutable(t, "d-slow")
	tokens := int(pastRouteTimeout.Seconds()*tps) + 5
	req, err := http.NewRequest(http.MethodPost, e.url+"/v1/openai/chat/completions", strings.NewReader(
		`{"model":"alice/slow","stream":true,"max_tokens":`+itoa(tokens)+`,"messages":[{"role":"user","content":"go"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer tok-alice")
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stream: %d", resp.StatusCode)
	}
	var (
		mu     sync.Mutex
		chunks int
		doneAt time.Duration
	)
	streamDone := make(chan struct{})
	go func() {
		defer close(streamDone)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			line := sc.Text()
			mu.Lock()
			if line == "data: [DONE]" {
				doneAt = time.Since(start)
			} else if strings.HasPrefix(line, "data: ") {
				chunks++
			}
			mu.Unlock()
		}
	}()

	// Scale-down two seconds in: the instance leaves load balancing.
	time.Sleep(2 * time.Second)
	e.px.SetEndpoints("d-slow", 8, nil)
	e.xs.SetEndpoints("d-slow", 8, nil)
	drained := e.xs.Drained("d-slow", "i-d-slow")
	e.mu.Lock()
	addr := e.addrs["d-slow"]
	e.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e.waitFor(ctx, t, "instance draining in envoy", func() bool {
		return strings.Contains(e.hostFlags(t, "deploy-d-slow", addr), "draining")
	})
	select {
	case <-drained:
		t.Fatal("Drained closed while a stream was in flight")
	case <-streamDone:
		t.Fatal("stream ended early")
	case <-time.After(time.Second):
	}
	<-streamDone
	mu.Lock()
	got, at := chunks, doneAt
	mu.Unlock()
	if at < pastRouteTimeout-time.Second || got < tokens {
		t.Fatalf("stream: %d chunks, [DONE] at %v; want >= %d chunks and [DONE] after ~%v", got, at, tokens, pastRouteTimeout)
	}
	select {
	case <-drained:
	case <-time.After(5 * time.Second):
		t.Fatal("Drained not closed after the stream ended")
	}
	// The instance then leaves Envoy.
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e.waitFor(ctx, t, "drained instance removed from envoy", func() bool { return e.hostFlags(t, "deploy-d-slow", addr) == "" })
}

func itoa(n int) string { return strconv.Itoa(n) }

// checkNoNACK: Envoy accepted every configuration it was sent.
func checkNoNACK(t *testing.T, e *edge) {
	if n := e.xs.NACKs(); n != 0 {
		t.Errorf("xds server counted %d NACKs", n)
	}
	for name, v := range e.statsContaining(t, "update_rejected") {
		if v != 0 {
			t.Errorf("envoy %s = %d", name, v)
		}
	}
	if n := e.stat(t, "control_plane.connected_state"); n != 1 {
		t.Errorf("envoy control_plane.connected_state = %d, want 1", n)
	}
}
