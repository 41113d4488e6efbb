package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/routing"
)

func TestForwardWarm(t *testing.T) {
	tests := []struct {
		name, path, body string
		wantPath         string
		wantModel        string
	}{
		{"openai chat", "/v1/openai/chat/completions", chatBody, "/v1/chat/completions", "alice/m"},
		{"openai completions", "/v1/openai/completions", `{"model":"alice/m","prompt":"hi"}`, "/v1/completions", "alice/m"},
		{"v1 chat", "/v1/chat/completions", chatBody, "/v1/chat/completions", "alice/m"},
		{"v1 completions", "/v1/completions", `{"model":"alice/m","prompt":"hi"}`, "/v1/completions", "alice/m"},
		{"deploy_id model rewritten to the full name", "/v1/openai/chat/completions",
			`{"model":"deploy_id:d1","messages":[{"role":"user","content":"hi"}],"temperature":0.5}`, "/v1/chat/completions", "alice/m"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{})
			up := newUpstream(t, nil)
			h.p.SetEndpoints("d1", 2, map[string]string{"i1": up.addr()})
			r := h.post(context.Background(), "alice", tt.path, tt.body)
			if r.err != nil || r.status != http.StatusOK {
				t.Fatalf("status %d err %v body %s", r.status, r.err, r.body)
			}
			if h := r.header.Get(routing.ColdStartHeader); h != "" {
				t.Errorf("warm request has %s: %q", routing.ColdStartHeader, h)
			}
			var resp struct {
				Model string
				Usage struct {
					TotalTokens int `json:"total_tokens"`
				}
			}
			if err := json.Unmarshal([]byte(r.body), &resp); err != nil || resp.Usage.TotalTokens == 0 {
				t.Errorf("client got %s (%v), want the model server's completion with usage", r.body, err)
			}
			got := up.seen()
			if len(got) != 1 {
				t.Fatalf("upstream saw %d requests, want 1", len(got))
			}
			if diff := cmp.Diff(seen{Path: tt.wantPath, Model: tt.wantModel}, got[0], cmp.FilterPath(func(p cmp.Path) bool {
				return p.Last().String() == ".Body"
			}, cmp.Ignore())); diff != "" {
				t.Errorf("forwarded request (-want +got):\n%s", diff)
			}
			var sent map[string]any
			_ = json.Unmarshal([]byte(tt.body), &sent)
			sent["model"] = tt.wantModel
			if diff := cmp.Diff(sent, got[0].Body); diff != "" {
				t.Errorf("forwarded body, other fields unchanged (-want +got):\n%s", diff)
			}
			eventually(t, "demand back to 0", func() bool { return h.sink.get("d1") == (Load{}) })
		})
	}
}

func TestForwardErrors(t *testing.T) {
	tests := []struct {
		name, user, path, body string
		want                   apiErr
	}{
		{"no token", "", "/v1/openai/chat/completions", chatBody,
			apiErr{Status: 401, Type: "authentication_error", Code: "missing_token"}},
		{"unknown model", "alice", "/v1/openai/chat/completions", `{"model":"alice/nope"}`,
			apiErr{Status: 404, Type: "not_found_error", Code: "model_not_found", Param: strp("model")}},
		{"another user's model", "bob", "/v1/openai/chat/completions", chatBody,
			apiErr{Status: 404, Type: "not_found_error", Code: "model_not_found", Param: strp("model")}},
		{"missing model", "alice", "/v1/openai/chat/completions", `{"messages":[]}`,
			apiErr{Status: 400, Type: "invalid_request_error", Code: "missing_model", Param: strp("model")}},
		{"model not a string", "alice", "/v1/openai/completions", `{"model":5}`,
			apiErr{Status: 400, Type: "invalid_request_error", Code: "missing_model", Param: strp("model")}},
		{"invalid JSON", "alice", "/v1/openai/chat/completions", `{"model":`,
			apiErr{Status: 400, Type: "invalid_request_error", Code: "invalid_json"}},
		{"JSON array", "alice", "/v1/chat/completions", `[1]`,
			apiErr{Status: 400, Type: "invalid_request_error", Code: "invalid_json"}},
		{"JSON null", "alice", "/v1/chat/completions", `null`,
			apiErr{Status: 400, Type: "invalid_request_error", Code: "invalid_json"}},
		{"body over MaxBody", "alice", "/v1/openai/chat/completions", `{"model":"alice/m","pad":"` + strings.Repeat("x", 2048) + `"}`,
			apiErr{Status: 413, Type: "invalid_request_error", Code: "body_too_large"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{MaxBody: 1024})
			up := newUpstream(t, nil)
			h.p.SetEndpoints("d1", 2, map[string]string{"i1": up.addr()})
			got, msg := errOf(t, h.post(context.Background(), tt.user, tt.path, tt.body))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("error (-want +got):\n%s\nmessage: %s", diff, msg)
			}
			if n := len(up.seen()); n != 0 {
				t.Errorf("upstream saw %d requests, want 0", n)
			}
		})
	}
}

func TestModels(t *testing.T) {
	h := newHarness(t, Config{})
	for _, path := range []string{"/v1/openai/models", "/v1/models"} {
		for user, want := range map[string]string{
			"alice": `{"object":"list","data":[{"id":"alice/m","object":"model","created":1700000000,"owned_by":"alice"}]}`,
			"bob":   `{"object":"list","data":[]}`,
		} {
			req, _ := http.NewRequest(http.MethodGet, h.srv.URL+path, nil)
			req.Header.Set("Authorization", "Bearer tok-"+user)
			resp, err := h.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var got, wantV any
			_ = json.NewDecoder(resp.Body).Decode(&got)
			resp.Body.Close()
			_ = json.Unmarshal([]byte(want), &wantV)
			if diff := cmp.Diff(wantV, got); diff != "" {
				t.Errorf("%s as %s (-want +got):\n%s", path, user, diff)
			}
		}
	}
}

// TestStreaming checks that server-sent events reach the client as the model
// server flushes them, not when it finishes.
func TestStreaming(t *testing.T) {
	h := newHarness(t, Config{})
	next := make(chan struct{})
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request, _ map[string]any) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: {\"choices\":[{\"delta\":{\"content\":\"first\"}}]}\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-next:
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
			return
		}
		fmt.Fprint(w, "data: {\"choices\":[{\"delta\":{\"content\":\"second\"}}]}\n\ndata: [DONE]\n\n")
	})
	h.p.SetEndpoints("d1", 2, map[string]string{"i1": up.addr()})

	req, _ := http.NewRequest(http.MethodPost, h.srv.URL+"/v1/openai/chat/completions",
		strings.NewReader(`{"model":"alice/m","stream":true,"messages":[]}`))
	req.Header.Set("Authorization", "Bearer tok-alice")
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type = %q, want text/event-stream", ct)
	}
	br := bufio.NewReader(resp.Body)
	first := make(chan string, 1)
	go func() {
		line, _ := br.ReadString('\n')
		first <- line
	}()
	select {
	case line := <-first:
		if !strings.Contains(line, "first") {
			t.Errorf("first line = %q", line)
		}
	case <-time.After(2 * time.Second):
		close(next)
		t.Fatal("first event not delivered while the model server was still generating")
	}
	close(next)
	var rest strings.Builder
	for {
		line, err := br.ReadString('\n')
		rest.WriteString(line)
		if err != nil {
			break
		}
	}
	if s := rest.String(); !strings.Contains(s, "second") || !strings.HasSuffix(s, "data: [DONE]\n\n") {
		t.Errorf("rest of stream = %q, want the second event then [DONE]", s)
	}
}

// TestDialFailureRetried: an instance that refuses connections (died between
// readiness and the request) must not fail a request another instance can
// serve. The good instance is kept busy with one request so that the pool,
// which prefers the least loaded instance, tries the dead one first.
func TestDialFailureRetried(t *testing.T) {
	h := newHarness(t, Config{})
	good := newBlockingUpstream(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()

	h.p.SetEndpoints("d1", 4, map[string]string{"good": good.addr()})
	first := h.postAsync(context.Background(), "alice", "/v1/chat/completions", seqBody(1))
	if s := good.next(t); s != 1 {
		t.Fatalf("good instance got seq %d, want 1", s)
	}
	h.p.SetEndpoints("d1", 4, map[string]string{"good": good.addr(), "dead": dead})

	second := h.postAsync(context.Background(), "alice", "/v1/chat/completions", seqBody(2))
	select {
	case s := <-good.arrived:
		if s != 2 {
			t.Errorf("good instance got seq %d, want 2", s)
		}
		good.releaseOne(t)
		good.releaseOne(t)
	case r := <-second:
		good.releaseOne(t)
		t.Errorf("request failed although a good instance had free slots: %d %s", r.status, strings.TrimSpace(r.body))
	case <-time.After(3 * time.Second):
		t.Fatal("second request neither reached the good instance nor failed")
	}
	for i, ch := range []<-chan result{first, second} {
		select {
		case r := <-ch:
			if r.status != http.StatusOK {
				t.Errorf("request %d: %d %s", i+1, r.status, strings.TrimSpace(r.body))
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("request %d: no response", i+1)
		}
	}
	eventually(t, "in-flight back to 0", func() bool { return h.p.Counts()["d1"] == (Load{}) })
}

// TestInstanceDiesHeldForReplacement: the only instance of a deployment
// dies under a request (its kept-alive connection is reset, its port
// closes). The request is not failed: it is held until the fleet brings a
// replacement, and served there, as a user waking a cold deployment is.
func TestInstanceDiesHeldForReplacement(t *testing.T) {
	h := newHarness(t, Config{})
	var dying atomic.Bool
	var old *upstream
	old = newUpstream(t, func(w http.ResponseWriter, r *http.Request, _ map[string]any) {
		if dying.Load() {
			// Killed under the request: the port closes, the connection
			// goes, no answer.
			old.srv.Listener.Close()
			hangUp(w, true)
			return
		}
		io.WriteString(w, `{"id":"old"}`)
	})
	h.p.SetEndpoints("d1", 4, map[string]string{"old": old.addr()})
	// A first request leaves a kept-alive connection to the old instance.
	if r := h.post(context.Background(), "alice", "/v1/chat/completions", chatBody); r.status != http.StatusOK {
		t.Fatalf("first request: %d %s", r.status, r.body)
	}
	dying.Store(true)
	second := h.postAsync(context.Background(), "alice", "/v1/chat/completions", chatBody)
	h.waitHeld("d1", 1)
	replacement := newUpstream(t, func(w http.ResponseWriter, r *http.Request, _ map[string]any) {
		io.WriteString(w, `{"id":"replacement"}`)
	})
	h.p.SetEndpoints("d1", 4, map[string]string{"new": replacement.addr()})
	select {
	case r := <-second:
		if r.status != http.StatusOK || !strings.Contains(r.body, "replacement") {
			t.Errorf("request held through the instance's death: %d %s, want 200 from the replacement", r.status, r.body)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the held request was not served by the replacement")
	}
	eventually(t, "in-flight back to 0", func() bool { return h.p.Counts()["d1"] == (Load{}) })
}

// TestJSONContentTypeUpstream: a client that sends its JSON body without
// Content-Type: application/json (curl -d sends a form's type, some clients
// none) is still served: vLLM refuses any other type with 415, so the
// model server is told the body is JSON.
func TestJSONContentTypeUpstream(t *testing.T) {
	got := make(chan string, 4)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request, _ map[string]any) {
		got <- r.Header.Get("Content-Type")
		io.WriteString(w, `{"id":"x"}`)
	})
	h := newHarness(t, Config{})
	h.p.SetEndpoints("d1", 4, map[string]string{"i1": up.addr()})
	for _, ct := range []string{"", "application/x-www-form-urlencoded", "text/plain", "application/json; charset=utf-8"} {
		req, _ := http.NewRequest(http.MethodPost, h.srv.URL+"/v1/openai/chat/completions", strings.NewReader(chatBody))
		req.Header.Set("Authorization", "Bearer tok-alice")
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		resp, err := h.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("Content-Type %q: %s", ct, resp.Status)
			continue
		}
		if up := <-got; up != "application/json" {
			t.Errorf("client sent Content-Type %q: the model server got %q, want application/json", ct, up)
		}
	}
}

// TestKeptAliveConnectionClosedRetried: a model server that closes a
// kept-alive connection just as it is reused (its idle timeout, with no
// answer) is alive: the request is sent again on a fresh connection, to the
// same instance, at once; the instance is not avoided as a refusing one.
func TestKeptAliveConnectionClosedRetried(t *testing.T) {
	h := newHarness(t, Config{})
	var closeOnce atomic.Bool
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request, _ map[string]any) {
		if closeOnce.CompareAndSwap(true, false) {
			hangUp(w, false)
			return
		}
		io.WriteString(w, `{"id":"ok"}`)
	})
	h.p.SetEndpoints("d1", 4, map[string]string{"only": up.addr()})
	if r := h.post(context.Background(), "alice", "/v1/chat/completions", chatBody); r.status != http.StatusOK {
		t.Fatalf("first request: %d %s", r.status, r.body)
	}
	closeOnce.Store(true)
	start := time.Now()
	r := h.post(context.Background(), "alice", "/v1/chat/completions", chatBody)
	if r.status != http.StatusOK {
		t.Fatalf("request whose kept-alive connection was closed: %d %s, want 200 on a fresh connection", r.status, r.body)
	}
	if took := time.Since(start); took > refusedFor/2 {
		t.Errorf("served after %v: the live instance was avoided as if it refused connections", took)
	}
}

// TestRefusedUntilReplaced: the only instance of a deployment refuses
// connections (Nomad killed it) and the fleet takes seconds to hear of it
// and bring a replacement: longer than the instance is avoided after each
// refusal, several times over. The request is neither failed nor answered
// 502: it is held, and served by the replacement.
func TestRefusedUntilReplaced(t *testing.T) {
	h := newHarness(t, Config{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	h.p.SetEndpoints("d1", 4, map[string]string{"dead": dead})
	req := h.postAsync(context.Background(), "alice", "/v1/chat/completions", chatBody)
	time.Sleep(3*refusedFor + refusedFor/2) // refused, avoided, refused again, ...
	select {
	case r := <-req:
		t.Fatalf("answered while the only instance refused: %d %s, want it held", r.status, strings.TrimSpace(r.body))
	default:
	}
	replacement := newUpstream(t, func(w http.ResponseWriter, r *http.Request, _ map[string]any) {
		io.WriteString(w, `{"id":"replacement"}`)
	})
	h.p.SetEndpoints("d1", 4, map[string]string{"new": replacement.addr()})
	select {
	case r := <-req:
		if r.status != http.StatusOK || !strings.Contains(r.body, "replacement") {
			t.Errorf("request: %d %s, want 200 from the replacement", r.status, r.body)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the request was not served by the replacement")
	}
	eventually(t, "in-flight back to 0", func() bool { return h.p.Counts()["d1"] == (Load{}) })
}
