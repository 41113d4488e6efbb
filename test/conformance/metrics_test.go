package conformance

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/thawhq/thaw/demand"
	"github.com/thawhq/thaw/test/e2e"
)

// scrapeResult is one GET /metrics, parsed, and its raw text.
type scrapeResult struct {
	e2e.Metrics
	raw []byte
}

// scrape reads /metrics in the Prometheus text format.
func scrape(t *testing.T, srv server) scrapeResult {
	t.Helper()
	r := send(t, srv, http.MethodGet, "/metrics", "")
	if r.status != http.StatusOK {
		t.Fatalf("GET /metrics = %d %s", r.status, r.body)
	}
	m, err := e2e.ParseMetrics(bytes.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	return scrapeResult{Metrics: m, raw: r.body}
}

// value returns the one series of name for srv's model, failing t unless
// there is exactly one, typed typ (family name with or without _total), and
// labelled engine and model_name.
func (s scrapeResult) value(t *testing.T, srv server, name, typ string) float64 {
	t.Helper()
	var named, found []e2e.Sample
	for _, smp := range s.Samples {
		if smp.Name != name {
			continue
		}
		named = append(named, smp)
		if smp.Labels["model_name"] == srv.model {
			found = append(found, smp)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d series %s{model_name=%q}, want 1: %v", len(found), name, srv.model, named)
	}
	if _, ok := found[0].Labels["engine"]; !ok {
		t.Errorf("%s has labels %v, want engine among them", name, found[0].Labels)
	}
	got := s.Types[name]
	if got == "" {
		got = s.Types[strings.TrimSuffix(name, "_total")]
	}
	if got != typ {
		t.Errorf("# TYPE of %s = %q, want %s", name, got, typ)
	}
	return found[0].Value
}

// load is the scheduler's gauges.
type load struct{ running, waiting, kv float64 }

func (s scrapeResult) load(t *testing.T, srv server) load {
	t.Helper()
	l := load{
		running: s.value(t, srv, "vllm:num_requests_running", "gauge"),
		waiting: s.value(t, srv, "vllm:num_requests_waiting", "gauge"),
		kv:      s.value(t, srv, "vllm:kv_cache_usage_perc", "gauge"),
	}
	if l.kv < 0 || l.kv > 1 {
		t.Errorf("vllm:kv_cache_usage_perc = %v, want a fraction in [0, 1]", l.kv)
	}
	// What thaw's demand scraper reads must agree.
	got, err := demand.ParseVLLM(bytes.NewReader(s.raw))
	if err != nil {
		t.Errorf("demand.ParseVLLM: %v", err)
	} else if want := (demand.ServerLoad{Running: int(l.running), Waiting: int(l.waiting)}); got != want {
		t.Errorf("demand.ParseVLLM = %+v, want %+v", got, want)
	}
	return l
}

func testMetrics(t *testing.T, srv server) {
	before := scrape(t, srv)
	l := before.load(t, srv)
	if l.running != 0 || l.waiting != 0 {
		t.Errorf("idle server: running %v, waiting %v; want 0, 0", l.running, l.waiting)
	}
	prompt0 := before.value(t, srv, "vllm:prompt_tokens_total", "counter")
	gen0 := before.value(t, srv, "vllm:generation_tokens_total", "counter")

	o := postOK(t, srv, "/v1/completions", obj{"prompt": "Once upon a time", "max_tokens": 5})
	prompt, completion := checkUsage(t, sub(t, o, "usage"), 1, 5)
	var dp, dg float64
	ok := e2e.Eventually(5*time.Second, 20*time.Millisecond, func() bool {
		after := scrape(t, srv)
		dp = after.value(t, srv, "vllm:prompt_tokens_total", "counter") - prompt0
		dg = after.value(t, srv, "vllm:generation_tokens_total", "counter") - gen0
		return dp == float64(prompt) && dg == float64(completion)
	})
	if !ok {
		t.Errorf("after a request of %d prompt and %d completion tokens, the counters rose by %v and %v",
			prompt, completion, dp, dg)
	}
}

// testWaiting fills the batch (max-num-seqs) with long generations and
// sends one more: it shows as waiting, then everything drains when the
// clients leave.
func testWaiting(t *testing.T, srv server) {
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	body := fmt.Sprintf(`{"model":%q,"prompt":"Once upon a time","max_tokens":500,"ignore_eos":true,"stream":true}`, srv.model)
	for range maxNumSeqs + 1 {
		wg.Go(func() {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.base+"/v1/completions", strings.NewReader(body))
			if err != nil {
				t.Error(err)
				return
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return // cancelled
			}
			defer resp.Body.Close()
			_, _ = io.Copy(io.Discard, resp.Body)
		})
	}
	var l load
	full := e2e.Eventually(30*time.Second, 10*time.Millisecond, func() bool {
		l = scrape(t, srv).load(t, srv)
		return l.running == maxNumSeqs && l.waiting >= 1
	})
	if !full {
		t.Fatalf("with %d long requests: running %v, waiting %v; want %d running and 1 waiting",
			maxNumSeqs+1, l.running, l.waiting, maxNumSeqs)
	}
	if l.kv <= 0 {
		t.Errorf("kv_cache_usage_perc = %v with a full batch, want more than 0", l.kv)
	}
	cancel()
	wg.Wait()
	if !e2e.Eventually(10*time.Second, 20*time.Millisecond, func() bool {
		l = scrape(t, srv).load(t, srv)
		return l.running == 0 && l.waiting == 0
	}) {
		t.Errorf("after the clients left: running %v, waiting %v; want 0, 0", l.running, l.waiting)
	}
}
