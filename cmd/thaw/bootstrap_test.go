package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestPublicMux(t *testing.T) {
	for _, tt := range []struct {
		name   string
		health func() map[string]string
		want   string
	}{
		{"no fields (thaw dev)", nil, `{"status":"ok"}`},
		{"one field", func() map[string]string { return map[string]string{"role": "activator"} }, `{"status":"ok","role":"activator"}`},
		{"fields in name order", func() map[string]string { return map[string]string{"z": "1", "nomad": "unreachable"} }, `{"status":"ok","nomad":"unreachable","z":"1"}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			newPublicMux(tt.health, nil).ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
			got := []string{rec.Header().Get("Content-Type"), strings.TrimSpace(rec.Body.String())}
			if diff := cmp.Diff([]string{"application/json", tt.want}, got); diff != "" {
				t.Errorf("GET /healthz (-want +got):\n%s", diff)
			}
		})
	}
	rec := httptest.NewRecorder()
	newPublicMux(nil, nil).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusNotFound || !strings.Contains(rec.Body.String(), `"code":"not_found"`) {
		t.Errorf("GET /metrics on the public mux: %d %s, want the JSON 404", rec.Code, rec.Body)
	}
}

// TestProcess starts the shared bootstrap as thaw dev does (embedded Redis,
// the operators' listener on a free port) and serves one component.
func TestProcess(t *testing.T) {
	var flags processFlags
	flags.metricsAddr = "127.0.0.1:0"
	var logs bytes.Buffer
	p, err := startProcess(t.Context(), processConfig{Service: "thaw-test", Flags: flags, EmbeddedRedis: true, Stderr: &logs})
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	if err := p.Redis.Set(t.Context(), "k", "v", 0).Err(); err != nil {
		t.Fatalf("embedded Redis: %v", err)
	}
	metrics := "http://" + p.metrics.Addr().String() + "/metrics"

	ctx, cancel := context.WithCancel(t.Context())
	var stdout bytes.Buffer
	component := func(ctx context.Context) error {
		defer cancel()
		resp, err := http.Get(metrics)
		if err != nil {
			t.Errorf("GET /metrics: %v", err)
			return nil
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "go_goroutines") {
			t.Errorf("GET /metrics: %d, no go_goroutines in\n%.300s", resp.StatusCode, body)
		}
		return nil
	}
	if err := p.serve(ctx, &stdout, "thaw test", func(w io.Writer) { io.WriteString(w, "banner\n") }, component); err != nil {
		t.Fatalf("serve: %v", err)
	}
	want := "banner\n  metrics (operators only): " + metrics + "\n"
	if diff := cmp.Diff(want, stdout.String()); diff != "" {
		t.Errorf("stdout (-want +got):\n%s", diff)
	}
	if !strings.Contains(logs.String(), `msg="thaw test stopped"`) {
		t.Errorf("no stop message in the log:\n%s", logs.String())
	}
}

func TestStartProcessRedisDown(t *testing.T) {
	var logs bytes.Buffer
	_, err := startProcess(t.Context(), processConfig{Service: "thaw-test", Redis: redisFlags{addr: "127.0.0.1:1"}, Stderr: &logs})
	if err == nil || !strings.HasPrefix(err.Error(), "redis at 127.0.0.1:1: ") {
		t.Errorf("startProcess with no Redis: %v, want redis at 127.0.0.1:1: ...", err)
	}
}
