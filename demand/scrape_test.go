package demand

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"
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
		// Warm traffic that bypassed the holders, and requests queued
		// inside the server.
		{Counts{Held: 0, InFlight: 2, Running: 8, Waiting: 6}, 14},
	} {
		if got := tc.c.Demand(); got != tc.want {
			t.Errorf("%+v.Demand() = %d, want %d", tc.c, got, tc.want)
		}
	}
}

// TestScraperFeedsDemand: load reported by model servers (traffic that never
// passed a holder) reaches the autoscaler's demand.
func TestScraperFeedsDemand(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	a := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, vllmMetrics(8, 4)) }))
	defer a.Close()
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, vllmMetrics(3, 0)) }))
	defer b.Close()
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	s, err := NewScraper(ScraperConfig{Redis: rdb, Interval: 10 * time.Millisecond, Targets: func() map[string][]string {
		return map[string][]string{"d1": {strings.TrimPrefix(a.URL, "http://"), strings.TrimPrefix(b.URL, "http://"), strings.TrimPrefix(dead.URL, "http://")}}
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx)
	rd := Reader{Redis: rdb}
	deadline := time.Now().Add(3 * time.Second)
	for {
		got, err := rd.Demand(ctx)
		if err == nil && got["d1"] == 15 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("demand = %v (err %v), want d1: 15 (8+4 running/waiting on one server, 3 on the other, the dead one skipped)", got, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
