package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

func TestLogField(t *testing.T) {
	line := `time=2026-11-25T12:27:13.912Z level=INFO msg="model server started" instance=d-1-4627-1 deploy=d-1 addr=127.0.0.1:38887 pid=2412`
	for key, want := range map[string]string{"deploy": "d-1", "addr": "127.0.0.1:38887", "pid": "2412", "gpu": ""} {
		if got := logField(line, key); got != want {
			t.Errorf("logField(%q) = %q, want %q", key, got, want)
		}
	}
}

func TestCompletionBody(t *testing.T) {
	var got struct {
		Model     string `json:"model"`
		MaxTokens int    `json:"max_tokens"`
		Messages  []struct{ Role, Content string }
	}
	if err := json.Unmarshal(completionBody(`dev/m"x`, 3), &got); err != nil {
		t.Fatal(err)
	}
	if got.Model != `dev/m"x` || got.MaxTokens != 3 || len(got.Messages) != 1 {
		t.Errorf("body = %+v", got)
	}
}

func TestHeldRequests(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "# HELP thaw_requests_held Requests held.\n# TYPE thaw_requests_held gauge\n"+
			`thaw_requests_held{deploy_id="a",otel_scope_name="proxy"} 9000`+"\n"+
			`thaw_requests_held{deploy_id="b",otel_scope_name="proxy"} 1000`+"\n"+
			`thaw_requests_held_total_other 5`+"\n"+
			`thaw_requests_inflight{deploy_id="a"} 7`+"\n")
	}))
	defer srv.Close()
	n, err := heldRequests(context.Background(), srv.URL)
	if err != nil || n != 10000 {
		t.Errorf("heldRequests = %d, %v; want 10000", n, err)
	}
}

func TestClosedLoopCountsFailures(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		if calls.Add(1)%10 == 0 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, `{}`)
	}))
	defer srv.Close()
	tgt := target{url: srv.URL, auth: true, client: keepAliveClient(4)}
	lat, wall, failed, firstErr := closedLoop(context.Background(), tgt, completionBody("m", 1), 100, 4)
	if len(lat) != 90 || failed != 10 || firstErr == nil || wall <= 0 {
		t.Errorf("closedLoop: %d ok, %d failed (first %v), wall %v; want 90 ok, 10 failed", len(lat), failed, firstErr, wall)
	}
	if calls.Load() != 100 {
		t.Errorf("server saw %d requests, want 100", calls.Load())
	}
}
