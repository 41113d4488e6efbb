package conformance

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/thawhq/thaw/demand"
	"github.com/thawhq/thaw/test/e2e"
)

// sample is one series of a scrape.
type sample struct {
	labels map[string]string
	value  float64
}

// scrapeResult is one GET /metrics: samples by metric name and the # TYPE
// of each family, and the raw text.
type scrapeResult struct {
	samples map[string][]sample
	types   map[string]string
	raw     []byte
}

var labelRE = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

// scrape reads /metrics in the Prometheus text format.
func scrape(t *testing.T, srv server) scrapeResult {
	t.Helper()
	r := send(t, srv, http.MethodGet, "/metrics", "")
	if r.status != http.StatusOK {
		t.Fatalf("GET /metrics = %d %s", r.status, r.body)
	}
	res := scrapeResult{samples: map[string][]sample{}, types: map[string]string{}, raw: r.body}
	sc := bufio.NewScanner(bytes.NewReader(r.body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, typ, _ := strings.Cut(rest, " ")
			res.types[name] = typ
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, labels := line, ""
		if i := strings.IndexByte(line, '{'); i >= 0 {
			j := strings.LastIndexByte(line, '}')
			name, labels = line[:i], line[i+1:j]
			line = name + line[j+1:]
		}
		fields := strings.Fields(line)
		if len(fields) < 2 {
			t.Fatalf("metrics line %q has no value", line)
		}
		name = fields[0]
		v, err := strconv.ParseFloat(fields[1], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		s := sample{labels: map[string]string{}, value: v}
		for _, m := range labelRE.FindAllStringSubmatch(labels, -1) {
			s.labels[m[1]] = m[2]
		}
		res.samples[name] = append(res.samples[name], s)
	}
	return res
}

// value returns the one series of name for srv's model, failing t unless
// there is exactly one, typed typ (family name with or without _total), and
// labelled engine and model_name.
func (s scrapeResult) value(t *testing.T, srv server, name, typ string) float64 {
	t.Helper()
	var found []sample
	for _, smp := range s.samples[name] {
		if smp.labels["model_name"] == srv.model {
			found = append(found, smp)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d series %s{model_name=%q}, want 1: %v", len(found), name, srv.model, s.samples[name])
	}
	if _, ok := found[0].labels["engine"]; !ok {
		t.Errorf("%s has labels %v, want engine among them", name, found[0].labels)
	}
	got := s.types[name]
	if got == "" {
		got = s.types[strings.TrimSuffix(name, "_total")]
	}
	if got != typ {
		t.Errorf("# TYPE of %s = %q, want %s", name, got, typ)
	}
	return found[0].value
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
