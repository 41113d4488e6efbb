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
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/thawhq/thaw/routing"
)

// warmupServer is a model server that answers /health and /v1/models for
// "alice/m", and the completions endpoint with status after delay (fake
// time: the tests run in a synctest bubble), recording the warm-up
// requests it gets.
type warmupServer struct {
	status int
	delay  time.Duration
	// answer is the body of a 200 answer.
	answer string

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
		fmt.Fprint(w, s.answer)
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
// probes' default timeout (1s), and returns what it reported if it was
// ready within wait. Call it inside a synctest bubble.
func probeFor(t *testing.T, srv http.Handler, wait time.Duration) (probeResult, bool) {
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
	case r := <-f.readyCh:
		return r, true
	case <-time.After(wait):
		return probeResult{}, false
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

// A completion answer of vLLM's shape, with its usage.
const vllmAnswer = `{"id":"cmpl-1","object":"text_completion","model":"alice/m",` +
	`"choices":[{"index":0,"text":"!","finish_reason":"length"}],` +
	`"usage":{"prompt_tokens":2,"total_tokens":3,"completion_tokens":1}}`

// TestWarmupUsage: the ready report carries what the warm-up made the
// model server count: one request, and the answer's usage when it has
// one.
func TestWarmupUsage(t *testing.T) {
	for _, tt := range []struct {
		name, answer string
		want         WarmupUsage
	}{
		{"vLLM's answer", vllmAnswer, WarmupUsage{Requests: 1, PromptTokens: 2, CompletionTokens: 1}},
		{"no usage", `{"choices":[{"text":"x","finish_reason":"length"}]}`, WarmupUsage{Requests: 1}},
		{"not JSON", `ok`, WarmupUsage{Requests: 1}},
		{"negative tokens", `{"usage":{"prompt_tokens":-2,"completion_tokens":1}}`, WarmupUsage{Requests: 1}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r, ok := probeFor(t, &warmupServer{status: http.StatusOK, answer: tt.answer}, 10*time.Second)
				if !ok {
					t.Fatal("not ready after a warm-up that answered 200")
				}
				want := probeResult{deployID: "d1", instanceID: "i1", warmup: tt.want}
				if diff := cmp.Diff(want, r, cmp.AllowUnexported(probeResult{})); diff != "" {
					t.Errorf("ready report (-want +got):\n%s", diff)
				}
			})
		})
	}
}

func testWarmupSlow(t *testing.T) {
	srv := &warmupServer{status: http.StatusOK, delay: 1200 * time.Millisecond, answer: vllmAnswer}
	if _, ok := probeFor(t, srv, 10*time.Second); !ok {
		t.Fatal("not ready after a warm-up that answered 200")
	}
	want := []warmupReq{{Header: "1", Body: map[string]any{"model": "alice/m", "prompt": "Hi", "max_tokens": float64(1)}}}
	if diff := cmp.Diff(want, srv.requests()); diff != "" {
		t.Errorf("warm-up requests (-want +got):\n%s", diff)
	}
}

func testWarmupCannotGenerate(t *testing.T) {
	srv := &warmupServer{status: http.StatusInternalServerError}
	if _, ok := probeFor(t, srv, 2500*time.Millisecond); ok {
		t.Fatal("ready although the warm-up answered 500")
	}
	// Retried once a second (at 0, 1s and 2s), not at the probe's pace.
	if n := len(srv.requests()); n != 3 {
		t.Errorf("%d warm-ups in 2.5s, want 3 (one, then one a second)", n)
	}
}

// TestReadyInstancesWarmup: the scraper's list of ready instances says
// what each one's warm-up made its model server count.
func TestReadyInstancesWarmup(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDeployment("d1", "alice", "m", 1, 0, 1)
		h := startFleet(t, Config{}, d)
		ids := h.readyInstances(d, 1)
		got := h.f.ReadyInstances()
		want := []Ready{{DeployID: "d1", InstanceID: ids[0], Warmup: WarmupUsage{Requests: 1, PromptTokens: 2, CompletionTokens: 1}}}
		if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(Ready{}, "Addr")); diff != "" {
			t.Errorf("ready instances (-want +got):\n%s", diff)
		}
	})
}
