package sim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/internal/polltest"
	"github.com/thawhq/thaw/internal/runtest"
)

var quiet = slog.New(slog.DiscardHandler)

// startHandler serves a new Server's Handler on a loopback httptest server
// and returns the Server and the base URL.
func startHandler(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	if cfg.Model == "" {
		cfg.Model = "m"
	}
	cfg.Logger = quiet
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return s, ts.URL
}

// waitFor polls cond until it holds, failing the test after 5 seconds. It
// runs in real time: its callers wait on state behind real loopback sockets,
// which a synctest bubble cannot hold (in-memory tests use synctest.Wait).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	polltest.Eventually(t, 5*time.Second, 5*time.Millisecond, what, cond)
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestNewValidates(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr bool
	}{
		{"minimal", Config{Model: "m"}, false},
		{"full", Config{Model: "m", Host: "127.0.0.1", Port: 8000, Startup: time.Second,
			TokensPerSecond: 10, MaxNumSeqs: 4}, false},
		{"no model", Config{Port: 8000}, true},
		{"negative port", Config{Model: "m", Port: -1}, true},
		{"port too big", Config{Model: "m", Port: 65536}, true},
		{"negative startup", Config{Model: "m", Startup: -time.Second}, true},
		{"negative rate", Config{Model: "m", TokensPerSecond: -1}, true},
		{"negative max num seqs", Config{Model: "m", MaxNumSeqs: -1}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Errorf("New(%+v) error = %v, want error %v", tt.cfg, err, tt.wantErr)
			}
		})
	}
}

// TestRunAnswersOnlyAfterStartup: the port is bound from the start, so no
// one else can take it, but a request sent while the model loads is
// answered only once the startup delay has passed.
func TestRunAnswersOnlyAfterStartup(t *testing.T) {
	const startup = 300 * time.Millisecond
	port := freePort(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s, err := New(Config{Model: "m", Port: port, Startup: startup, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	stop := runtest.Start(t, s.Run)

	waitFor(t, "the port bound", func() bool { return s.Addr() == addr })
	select {
	case <-s.Ready():
		t.Fatal("Ready closed during startup")
	default:
	}
	if ln, err := net.Listen("tcp", addr); err == nil {
		ln.Close()
		t.Fatal("another listener could bind the port during startup")
	}
	client := &http.Client{Timeout: startup / 6}
	if resp, err := client.Get("http://" + addr + "/health"); err == nil {
		resp.Body.Close()
		t.Fatalf("GET /health during startup answered %s; want no answer until loaded", resp.Status)
	}

	// A request sent during startup is answered once the model is loaded.
	resp, err := http.Get("http://" + addr + "/health")
	if err != nil {
		t.Fatalf("GET /health sent during startup: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /health status = %d, want 200", resp.StatusCode)
	}
	if waited := time.Since(began); waited < startup {
		t.Errorf("answered after %v, want at least %v", waited, startup)
	}
	select {
	case <-s.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("server never became ready")
	}

	if err := s.Run(t.Context()); !errors.Is(err, ErrAlreadyRun) {
		t.Errorf("second Run = %v, want ErrAlreadyRun", err)
	}
	stop()
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Error("port still open after Run returned")
	}
}

func TestRunCancelledDuringStartup(t *testing.T) {
	s, err := New(Config{Model: "m", Startup: time.Hour, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	runtest.Start(t, s.Run)() // cancelled during startup
	select {
	case <-s.Ready():
		t.Error("Ready closed although the server never served")
	default:
	}
}

// TestRunPortInUse: a taken port fails Run at once, saying which port.
func TestRunPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	s, err := New(Config{Model: "m", Port: port, Startup: time.Hour, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Run(t.Context())
	if want := fmt.Sprintf("sim: port %d is in use", port); err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Run on a port in use = %v, want %q...", err, want)
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("Run on a port in use = %v, want it to wrap EADDRINUSE", err)
	}
}

func TestHealthAndModels(t *testing.T) {
	_, url := startHandler(t, Config{Model: "acme/llama-8b"})

	resp, err := http.Get(url + "/health")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || len(body) != 0 {
		t.Errorf("GET /health = %d %q, want 200 with an empty body", resp.StatusCode, body)
	}

	resp, err = http.Get(url + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/models status = %d, want 200", resp.StatusCode)
	}
	var got map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	data := got["data"].([]any)
	card := data[0].(map[string]any)
	if created, _ := card["created"].(float64); created < float64(time.Now().Add(-time.Hour).Unix()) {
		t.Errorf("created = %v, want a recent unix time", card["created"])
	}
	delete(card, "created")
	want := map[string]any{
		"object": "list",
		"data": []any{map[string]any{
			"id": "acme/llama-8b", "object": "model", "owned_by": "thaw-sim",
			"root": "acme/llama-8b", "max_model_len": float64(4096),
		}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GET /v1/models (-want +got):\n%s", diff)
	}
}

// TestNoRoute: a path the server does not serve is vLLM's 404
// {"detail":"Not Found"}; a served path with another method its 405.
func TestNoRoute(t *testing.T) {
	_, url := startHandler(t, Config{})
	for _, tt := range []struct {
		method, path string
		status       int
		body         string
	}{
		{http.MethodGet, "/v1/nothing", 404, `{"detail":"Not Found"}`},
		{http.MethodPost, "/v1/nothing", 404, `{"detail":"Not Found"}`},
		{http.MethodGet, "/v1/chat/completions", 405, `{"detail":"Method Not Allowed"}`},
		{http.MethodPost, "/v1/models", 405, `{"detail":"Method Not Allowed"}`},
	} {
		req, err := http.NewRequest(tt.method, url+tt.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status || strings.TrimSpace(string(body)) != tt.body ||
			resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s = %d %s (%s), want %d %s (application/json)", tt.method, tt.path,
				resp.StatusCode, body, resp.Header.Get("Content-Type"), tt.status, tt.body)
		}
	}
}
