package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/thawhq/thaw/routing"
)

// warmupServer is a model server over a real socket that answers /health
// and /v1/models for "alice/m", and the completions endpoint with status
// after delay, recording the warm-up requests it gets.
type warmupServer struct {
	status int
	delay  time.Duration

	mu   sync.Mutex // mu guards reqs.
	reqs []warmupReq
}

type warmupReq struct {
	Header string
	Body   map[string]any
}

func (s *warmupServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/health":
	case "/v1/models":
		fmt.Fprint(w, `{"object":"list","data":[{"id":"alice/m","object":"model"}]}`)
	case "/v1/completions":
		var body map[string]any
		json.NewDecoder(r.Body).Decode(&body)
		s.mu.Lock()
		s.reqs = append(s.reqs, warmupReq{Header: r.Header.Get(routing.WarmupHeader), Body: body})
		s.mu.Unlock()
		time.Sleep(s.delay)
		if s.status != http.StatusOK {
			http.Error(w, `{"error":{"message":"engine dead"}}`, s.status)
			return
		}
		fmt.Fprint(w, `{"choices":[{"text":"x","finish_reason":"length"}]}`)
	default:
		http.NotFound(w, r)
	}
}

func (s *warmupServer) requests() []warmupReq {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]warmupReq(nil), s.reqs...)
}

// probeFor probes the server behind ts as the fleet probes a started
// instance, and returns whether it was reported ready within wait.
func probeFor(t *testing.T, ts *httptest.Server, wait time.Duration) bool {
	t.Helper()
	f, err := New(Config{
		Runtime: &fakeRuntime{}, Store: &fakeStore{}, Endpoints: &fakeEndpoints{},
		ProbeInterval: 5 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	defer func() { cancel(); <-done }()
	go func() {
		defer close(done)
		f.probe(ctx, "d1", "alice/m", "i1", strings.TrimPrefix(ts.URL, "http://"))
	}()
	select {
	case <-f.readyCh:
		return true
	case <-time.After(wait):
		return false
	}
}

// TestWarmupGatesReadiness: an instance whose model server answers /health
// and lists the model is routable only once a one-token completion, marked
// as the warm-up, has answered 200; the warm-up has its own timeout, longer
// than a probe's (1s), and runs once.
func TestWarmupGatesReadiness(t *testing.T) {
	t.Run("generates, slowly", func(t *testing.T) {
		srv := &warmupServer{status: http.StatusOK, delay: 1200 * time.Millisecond}
		ts := httptest.NewServer(srv)
		defer ts.Close()
		if !probeFor(t, ts, 10*time.Second) {
			t.Fatal("not ready after a warm-up that answered 200")
		}
		want := []warmupReq{{Header: "1", Body: map[string]any{"model": "alice/m", "prompt": "Hi", "max_tokens": float64(1)}}}
		if diff := cmp.Diff(want, srv.requests()); diff != "" {
			t.Errorf("warm-up requests (-want +got):\n%s", diff)
		}
	})
	t.Run("cannot generate", func(t *testing.T) {
		srv := &warmupServer{status: http.StatusInternalServerError}
		ts := httptest.NewServer(srv)
		defer ts.Close()
		if probeFor(t, ts, 2500*time.Millisecond) {
			t.Fatal("ready although the warm-up answered 500")
		}
		// Retried about once a second, not at the probe's pace.
		if n := len(srv.requests()); n < 2 || n > 4 {
			t.Errorf("%d warm-ups in 2.5s, want 2 to 4 (one, then one a second)", n)
		}
	})
}
