package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/routing"
)

// warmupServer is a model server that answers /health and /v1/models for
// "alice/m", and the completions endpoint with status after delay (fake
// time: the tests run in a synctest bubble), recording the warm-up
// requests it gets.
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
		select {
		case <-time.After(s.delay):
		case <-r.Context().Done():
			return
		}
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

// probeFor probes srv as the fleet probes a started instance, with the
// probes' default timeout (1s), and returns whether it was reported ready
// within wait. Call it inside a synctest bubble.
func probeFor(t *testing.T, srv http.Handler, wait time.Duration) bool {
	t.Helper()
	models := &modelNet{servers: map[string]http.Handler{}}
	addr := models.add(srv)
	f, err := New(Config{
		Runtime: &fakeRuntime{}, Store: &fakeStore{}, Endpoints: &fakeEndpoints{},
		ProbeInterval: 5 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
		HTTPClient: &http.Client{Transport: models, Timeout: time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	defer func() { cancel(); <-done }()
	go func() {
		defer close(done)
		f.probe(ctx, "d1", "alice/m", "i1", addr)
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
	t.Run("generates, slowly", func(t *testing.T) { synctest.Test(t, testWarmupSlow) })
	t.Run("cannot generate", func(t *testing.T) { synctest.Test(t, testWarmupCannotGenerate) })
}

func testWarmupSlow(t *testing.T) {
	srv := &warmupServer{status: http.StatusOK, delay: 1200 * time.Millisecond}
	if !probeFor(t, srv, 10*time.Second) {
		t.Fatal("not ready after a warm-up that answered 200")
	}
	want := []warmupReq{{Header: "1", Body: map[string]any{"model": "alice/m", "prompt": "Hi", "max_tokens": float64(1)}}}
	if diff := cmp.Diff(want, srv.requests()); diff != "" {
		t.Errorf("warm-up requests (-want +got):\n%s", diff)
	}
}

func testWarmupCannotGenerate(t *testing.T) {
	srv := &warmupServer{status: http.StatusInternalServerError}
	if probeFor(t, srv, 2500*time.Millisecond) {
		t.Fatal("ready although the warm-up answered 500")
	}
	// Retried once a second (at 0, 1s and 2s), not at the probe's pace.
	if n := len(srv.requests()); n != 3 {
		t.Errorf("%d warm-ups in 2.5s, want 3 (one, then one a second)", n)
	}
}
