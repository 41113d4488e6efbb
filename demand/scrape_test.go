package demand

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/internal/bubbletest"
	"github.com/thawhq/thaw/internal/redistest"
	"github.com/thawhq/thaw/meter"
	_ "github.com/thawhq/thaw/meter/drivers"
	"github.com/thawhq/thaw/sim"
)

func vllmMetrics(running, waiting int) string {
	return fmt.Sprintf(`# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="dev/m"} %d
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="dev/m"} %d
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{model_name="dev/m"} 0.5
`, running, waiting)
}

func TestParseVLLM(t *testing.T) {
	got, err := ParseVLLM(strings.NewReader(vllmMetrics(8, 5)))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(ServerLoad{Running: 8, Waiting: 5}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if _, err := ParseVLLM(strings.NewReader("# TYPE other gauge\nother 1\n")); err == nil {
		t.Error("metrics without vllm gauges parsed without error")
	}
}

func TestCountsDemand(t *testing.T) {
	for _, tc := range []struct {
		c    Counts
		want int
	}{
		{Counts{Held: 3}, 3},
		// Forwarded requests are running at the server: not counted twice.
		{Counts{Held: 2, InFlight: 8, Running: 8}, 10},
		// Warm traffic that bypassed the activators, and requests queued
		// inside the server.
		{Counts{Held: 0, InFlight: 2, Running: 8, Waiting: 6}, 14},
	} {
		if got := tc.c.Demand(); got != tc.want {
			t.Errorf("%+v.Demand() = %d, want %d", tc.c, got, tc.want)
		}
	}
}

// metricsNet serves each address's vLLM metrics in memory, as the
// scraper's transport; an address it does not know refuses, like a dead
// model server.
type metricsNet map[string]string

func (n metricsNet) RoundTrip(r *http.Request) (*http.Response, error) {
	body, ok := n[r.URL.Host]
	if !ok {
		return nil, fmt.Errorf("dial %s: connection refused", r.URL.Host)
	}
	rec := httptest.NewRecorder()
	fmt.Fprint(rec, body)
	return rec.Result(), nil
}

// TestScraperFeedsDemand: load reported by model servers (traffic that never
// passed an activator) reaches the autoscaler's demand.
func TestScraperFeedsDemand(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, rdb := redistest.New(t)
		servers := metricsNet{"a:8000": vllmMetrics(8, 4), "b:8000": vllmMetrics(3, 0)}
		s, err := NewScraper(ScraperConfig{Redis: rdb, Interval: 10 * time.Millisecond,
			HTTP: &http.Client{Transport: servers, Timeout: 10 * time.Millisecond},
			Targets: func() []Target {
				return []Target{{DeployID: "d1", InstanceID: "i1", Addr: "a:8000"}, {DeployID: "d1", InstanceID: "i2", Addr: "b:8000"},
					{DeployID: "d1", InstanceID: "i3", Addr: "dead:8000"}}
			}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go s.Run(ctx)
		rd := Reader{Redis: rdb}
		bubbletest.Eventually(t, "demand d1: 15 (8+4 running/waiting on one server, 3 on the other, the dead one skipped)", func() bool {
			got, err := rd.Demand(ctx)
			return err == nil && got["d1"] == 15
		})
	})
}

// vllmExposition is what vLLM's /metrics says (prometheus_client's text
// format: counters with their _created series, two engines), trimmed.
const vllmExposition = `# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="dev/m"} 2.0
vllm:num_requests_running{engine="1",model_name="dev/m"} 1.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="dev/m"} 0.0
vllm:num_requests_waiting{engine="1",model_name="dev/m"} 4.0
# HELP vllm:request_success_total Count of successfully processed requests.
# TYPE vllm:request_success_total counter
vllm:request_success_total{engine="0",finished_reason="stop",model_name="dev/m"} 5.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="dev/m"} 2.0
vllm:request_success_total{engine="0",finished_reason="abort",model_name="dev/m"} 1.0
vllm:request_success_total{engine="1",finished_reason="stop",model_name="dev/m"} 3.0
# HELP vllm:request_success_created Count of successfully processed requests.
# TYPE vllm:request_success_created gauge
vllm:request_success_created{engine="0",finished_reason="stop",model_name="dev/m"} 1.7e+09
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="dev/m"} 1234.0
vllm:prompt_tokens_total{engine="1",model_name="dev/m"} 766.0
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="dev/m"} 4.2e+06
vllm:generation_tokens_total{engine="1",model_name="dev/m"} 7.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_sum{engine="0",model_name="dev/m"} 1.5
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="dev/m"} 2.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="1.0",model_name="dev/m"} 3.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="dev/m"} 4.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="dev/m"} 4.0
vllm:time_to_first_token_seconds_sum{engine="1",model_name="dev/m"} 0.5
vllm:time_to_first_token_seconds_bucket{engine="1",le="0.1",model_name="dev/m"} 0.0
vllm:time_to_first_token_seconds_bucket{engine="1",le="1.0",model_name="dev/m"} 1.0
vllm:time_to_first_token_seconds_bucket{engine="1",le="+Inf",model_name="dev/m"} 1.0
vllm:time_to_first_token_seconds_count{engine="1",model_name="dev/m"} 1.0
`

func TestParseVLLMCounters(t *testing.T) {
	type parsed struct {
		Load     ServerLoad
		Counters meter.Counters
		OK       bool
		TTFT     meter.Histogram
	}
	for _, tt := range []struct {
		name, body string
		want       parsed
	}{
		{"vLLM: summed over engines and finish reasons", vllmExposition,
			parsed{ServerLoad{Running: 3, Waiting: 4}, meter.Counters{Requests: 11, PromptTokens: 2000, CompletionTokens: 4200007}, true,
				meter.Histogram{Bounds: []float64{0.1, 1}, Counts: []uint64{2, 4, 5}}}},
		{"load gauges only: no counters", vllmMetrics(1, 2), parsed{ServerLoad{Running: 1, Waiting: 2}, meter.Counters{}, false, meter.Histogram{}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rd, err := parseVLLM(strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, parsed{rd.load, rd.counters, rd.ok, rd.ttft}); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

// rounds remembers the rounds a Scraper hands to its Rounds observer.
type rounds struct {
	mu  sync.Mutex // guards got
	got [][]meter.Scrape
}

func (r *rounds) Observe(_ time.Time, round []meter.Scrape) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, round)
}

// chat sends one chat completion to a model server at base and returns
// the usage it answered.
func chat(t *testing.T, base, content string, maxTokens int) meter.Counters {
	t.Helper()
	body := fmt.Sprintf(`{"model":"alice/m","max_tokens":%d,"messages":[{"role":"user","content":%q}]}`, maxTokens, content)
	resp, err := http.Post(base+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Usage struct {
			PromptTokens     int64 `json:"prompt_tokens"`
			CompletionTokens int64 `json:"completion_tokens"`
		} `json:"usage"`
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("chat: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return meter.Counters{Requests: 1, PromptTokens: out.Usage.PromptTokens, CompletionTokens: out.Usage.CompletionTokens}
}

// TestScraperCountsSimTokens: requests sent to a model server (the
// simulator, which counts like vLLM), with no activator in between, end up
// in the ledger's requests and tokens of their deployment and hour, across
// scrapes and an hour boundary; the warm-up it served before it was ready
// (the target's baseline, the warm-up's usage) does not.
func TestScraperCountsSimTokens(t *testing.T) {
	ctx := context.Background()
	srv, err := sim.New(sim.Config{Model: "alice/m", TokensPerSecond: 2000, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	store, err := meter.Open(ctx, filepath.Join(t.TempDir(), "meter.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	counter, err := meter.NewTokenCounter(meter.TokenCounterConfig{Ledger: store})
	if err != nil {
		t.Fatal(err)
	}
	_, rdb := redistest.New(t)
	obs := &rounds{}
	warmup := chat(t, ts.URL, "Hi", 1) // before the scraper reads it: the fleet's warm-up
	s, err := NewScraper(ScraperConfig{Redis: rdb, Tokens: counter,
		Owner: func(id string) string {
			if id == "d1" {
				return "alice"
			}
			return ""
		},
		Targets: func() []Target {
			return []Target{{DeployID: "d1", InstanceID: "i1", Addr: ts.Listener.Addr().String(), Baseline: warmup}}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.ObserveRounds(obs)
	h := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	scrape := func(at time.Time) {
		t.Helper()
		if err := s.scrapeOnce(ctx, at); err != nil {
			t.Fatal(err)
		}
	}
	var sent [2]meter.Counters // per hour
	scrape(h.Add(58 * time.Minute))
	for i, n := range []int{3, 5, 8} {
		sent[0] = sent[0].Plus(chat(t, ts.URL, strings.Repeat("hello there ", i+1), n))
	}
	scrape(h.Add(59 * time.Minute))
	for i, n := range []int{2, 4} {
		sent[1] = sent[1].Plus(chat(t, ts.URL, strings.Repeat("general kenobi ", i+1), n))
	}
	scrape(h.Add(61 * time.Minute))
	scrape(h.Add(62 * time.Minute)) // nothing new: nothing added

	if sent[0].CompletionTokens != 3+5+8 || sent[1].CompletionTokens != 2+4 {
		t.Fatalf("the simulator answered %+v; want 16 and 6 completion tokens", sent)
	}
	got, err := store.Tokens(ctx, "alice", h, h.Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	row := func(hour time.Time, c meter.Counters) meter.Tokens {
		return meter.Tokens{DeployID: "d1", Owner: "alice", Hour: hour,
			Requests: c.Requests, PromptTokens: c.PromptTokens, CompletionTokens: c.CompletionTokens}
	}
	want := []meter.Tokens{row(h, sent[0]), row(h.Add(time.Hour), sent[1])}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("the ledger's tokens (-want +got):\n%s", d)
	}
	// The observer got the four rounds, the last with the simulator's
	// counters, the warm-up's as its baseline, and its time to first
	// token of all six requests.
	if len(obs.got) != 4 {
		t.Fatalf("the observer got %d rounds, want 4", len(obs.got))
	}
	last := obs.got[3][0]
	if all := warmup.Plus(sent[0]).Plus(sent[1]); last.Counters != all || last.Baseline != warmup || !last.OK || last.TTFT.Total() != 6 || len(last.TTFT.Bounds) != len(sim.TTFTBuckets) {
		t.Errorf("the last round's read = %+v; want counters %+v, baseline %+v and 6 first tokens in vLLM's %d buckets", last, all, warmup, len(sim.TTFTBuckets))
	}
}
