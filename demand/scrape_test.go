package demand

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/internal/bubbletest"
	"github.com/thawhq/thaw/internal/redistest"
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
			Targets: func() map[string][]string {
				return map[string][]string{"d1": {"a:8000", "b:8000", "dead:8000"}}
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
