package sim

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// scrape returns /metrics as series -> value, the series written as in the
// exposition (`name{label="v"}`), and the # TYPE of each metric.
func scrape(t *testing.T, url string) (series map[string]float64, types map[string]string) {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics status = %d", resp.StatusCode)
	}
	series, types = map[string]float64{}, map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, typ, _ := strings.Cut(rest, " ")
			types[name] = typ
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		series[line[:i]] = v
	}
	return series, types
}

const (
	running = `vllm:num_requests_running{engine="0",model_name="m"}`
	waiting = `vllm:num_requests_waiting{engine="0",model_name="m"}`
	kvUsage = `vllm:kv_cache_usage_perc{engine="0",model_name="m"}`
)

// gauges returns the three scheduler gauges.
func gauges(t *testing.T, url string) [3]float64 {
	s, _ := scrape(t, url)
	return [3]float64{s[running], s[waiting], s[kvUsage]}
}

// longRequest starts a chat request that would generate for minutes, and
// returns a func that disconnects it and waits until its client returns.
func longRequest(t *testing.T, url string, stream bool) (disconnect func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	body := `{"model":"m","max_tokens":4096,"stream":` + strconv.FormatBool(stream) +
		`,"messages":[{"role":"user","content":"hi"}]}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
	stop := func() { cancel(); wg.Wait() }
	t.Cleanup(stop)
	return stop
}

func TestMetricsShowQueueing(t *testing.T) {
	_, url := startHandler(t, Config{MaxNumSeqs: 2, TokensPerSecond: 10})
	_, types := scrape(t, url)
	wantTypes := map[string]string{
		"vllm:num_requests_running":        "gauge",
		"vllm:num_requests_waiting":        "gauge",
		"vllm:kv_cache_usage_perc":         "gauge",
		"vllm:request_success_total":       "counter",
		"vllm:prompt_tokens_total":         "counter",
		"vllm:generation_tokens_total":     "counter",
		"vllm:time_to_first_token_seconds": "histogram",
	}
	if diff := cmp.Diff(wantTypes, types); diff != "" {
		t.Errorf("metric types (-want +got):\n%s", diff)
	}
	if got := gauges(t, url); got != [3]float64{0, 0, 0} {
		t.Errorf("idle gauges (running, waiting, kv usage) = %v, want all 0", got)
	}

	var stops []func()
	for i := range 5 {
		stops = append(stops, longRequest(t, url, i%2 == 0))
	}
	want := [3]float64{2, 3, 1}
	var got [3]float64
	waitFor(t, "2 running and 3 waiting", func() bool { got = gauges(t, url); return got == want })

	stops[0]()
	want = [3]float64{2, 2, 1}
	waitFor(t, "a waiter to take the freed slot", func() bool { got = gauges(t, url); return got == want })

	for _, stop := range stops {
		stop()
	}
	waitFor(t, "all slots free after disconnects", func() bool { got = gauges(t, url); return got == [3]float64{} })
}

func TestDisconnectFreesSlot(t *testing.T) {
	_, url := startHandler(t, Config{MaxNumSeqs: 1, TokensPerSecond: 100})
	stopRunning := longRequest(t, url, false)
	waitFor(t, "one running", func() bool { return gauges(t, url) == [3]float64{1, 0, 1} })
	stopWaiting := longRequest(t, url, true)
	waitFor(t, "one waiting", func() bool { return gauges(t, url) == [3]float64{1, 1, 1} })

	stopWaiting()
	waitFor(t, "the waiter to leave the queue", func() bool { return gauges(t, url) == [3]float64{1, 0, 1} })
	stopRunning()
	waitFor(t, "the running request to free its slot", func() bool { return gauges(t, url) == [3]float64{0, 0, 0} })

	// The freed slot serves the next request at once.
	began := time.Now()
	resp := post(t, url, "/v1/completions", `{"prompt":"a b c","max_tokens":2}`)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d, want 200", resp.StatusCode)
	}
	if d := time.Since(began); d > 2*time.Second {
		t.Errorf("request after disconnects took %v; the slot was not freed", d)
	}
}

func TestMetricsCountTokens(t *testing.T) {
	_, url := startHandler(t, Config{TokensPerSecond: 1000})
	chatAll(t, url,
		`{"messages":[{"role":"user","content":"one two three"}],"max_tokens":4}`,
		`{"messages":[{"role":"user","content":"four"}],"max_tokens":2,"stream":true}`)
	series, _ := scrape(t, url)
	got := map[string]float64{}
	for _, name := range []string{
		`vllm:request_success_total{engine="0",finished_reason="length",model_name="m"}`,
		`vllm:prompt_tokens_total{engine="0",model_name="m"}`,
		`vllm:generation_tokens_total{engine="0",model_name="m"}`,
	} {
		got[name] = series[name]
	}
	want := map[string]float64{
		`vllm:request_success_total{engine="0",finished_reason="length",model_name="m"}`: 2,
		`vllm:prompt_tokens_total{engine="0",model_name="m"}`:                            4,
		`vllm:generation_tokens_total{engine="0",model_name="m"}`:                        6,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("counters (-want +got):\n%s", diff)
	}
}

func TestMetricsTimeToFirstToken(t *testing.T) {
	// 5 tokens/s: the first token comes 200ms after the request.
	_, url := startHandler(t, Config{TokensPerSecond: 5})
	chatAll(t, url,
		`{"messages":[{"role":"user","content":"one"}],"max_tokens":1}`,
		`{"messages":[{"role":"user","content":"two"}],"max_tokens":2,"stream":true}`)
	// A request that leaves before its first token has no time to first
	// token.
	longRequest(t, url, true)()

	series, _ := scrape(t, url)
	const name = `vllm:time_to_first_token_seconds`
	labels := `engine="0",model_name="m"`
	var les []string
	for _, b := range TTFTBuckets {
		les = append(les, strconv.FormatFloat(b, 'g', -1, 64))
	}
	if len(les) != 22 || les[0] != "0.001" || les[21] != "2560" {
		t.Fatalf("buckets %v are not vLLM's", les)
	}
	got := map[string]float64{}
	want := map[string]float64{}
	for _, le := range append(les, "+Inf") {
		key := name + `_bucket{` + labels + `,le="` + le + `"}`
		v, ok := series[key]
		if !ok {
			t.Fatalf("no series %s", key)
		}
		// Below 0.2s: none; from 2.5s: both (between: as slow as the
		// machine is).
		switch b, _ := strconv.ParseFloat(le, 64); {
		case b < 0.2:
			want[le] = 0
		case b >= 2.5:
			want[le] = 2
		default:
			continue
		}
		got[le] = v
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("cumulative bucket counts by le (-want +got):\n%s", diff)
	}
	if c := series[name+`_count{`+labels+`}`]; c != 2 {
		t.Errorf("count = %v, want 2", c)
	}
	if sum := series[name+`_sum{`+labels+`}`]; sum < 0.4 || sum > 2 {
		t.Errorf("sum = %vs, want about 0.4s (two requests, 0.2s each)", sum)
	}
}
