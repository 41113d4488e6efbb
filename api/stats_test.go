package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/internal/metertest"
	"github.com/thawhq/thaw/meter"
)

// statsSource serves samples from a real ledger and a fixed live sample.
type statsSource struct {
	*meter.Store
	mu      sync.Mutex // guards live and liveErr
	live    meter.Sample
	liveErr error
}

func (s *statsSource) Live(_ context.Context, id string, now time.Time) (meter.Sample, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.live
	l.DeployID, l.At = id, now
	return l, s.liveErr
}

func (s *statsSource) Interval() time.Duration { return 10 * time.Second }

func (s *statsSource) set(l meter.Sample, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.live, s.liveErr = l, err
}

// fakeGPUs is a fixed inventory, or an error.
type fakeGPUs struct {
	inv map[string]GPUCount
	err error
}

func (f fakeGPUs) GPUs(context.Context) (map[string]GPUCount, error) { return f.inv, f.err }

// statsBody is GET /deploy/{id}/stats's JSON, points as generic maps so
// that null and absent fields show.
type statsBody struct {
	DeployID    string           `json:"deploy_id"`
	From        time.Time        `json:"from"`
	To          time.Time        `json:"to"`
	StepSeconds float64          `json:"step_seconds"`
	Now         map[string]any   `json:"now"`
	Points      []map[string]any `json:"points"`
}

func decodeStats(t *testing.T, r response) statsBody {
	t.Helper()
	return decodeOK[statsBody](t, r)
}

func statsHarness(t *testing.T) (*harness, *statsSource, time.Time) {
	t.Helper()
	store, ledger := metertest.Open(t)
	now := time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)
	src := &statsSource{Store: ledger}
	h := startHarness(t, Config{Store: store, Stats: src, Prices: meter.Prices{"A100-80GB": 1.5, "L4-24GB": 0.5},
		GPUs: fakeGPUs{inv: map[string]GPUCount{"H100-80GB": {Total: 8, Free: 8}, "A100-80GB": {Total: 8, Free: 6}}},
		Now:  func() time.Time { return now }})
	return h, src, now
}

func TestStats(t *testing.T) {
	h, src, now := statsHarness(t)
	d := h.create("alice", "m1")
	ctx := context.Background()
	ttft := meter.Histogram{Bounds: []float64{0.1, 1}, Counts: []uint64{2, 4, 4}}
	err := src.AddSamples(ctx, []meter.Sample{
		{DeployID: d.ID, Owner: "alice", At: now.Add(-55 * time.Second), Counts: meter.Counts{Running: 1}, Span: 10, Requests: 5, CompletionTokens: 50, TTFT: &ttft},
		{DeployID: d.ID, Owner: "alice", At: now.Add(-50 * time.Second), Counts: meter.Counts{Running: 2, InFlight: 2}, Span: 5, Requests: 1, CompletionTokens: 10},
		{DeployID: d.ID, Owner: "alice", At: now.Add(-15 * time.Second), Counts: meter.Counts{Running: 1}, Span: 10},
		{DeployID: "other", Owner: "alice", At: now.Add(-45 * time.Second), Counts: meter.Counts{Running: 7}, Span: 10, Requests: 9},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Record(ctx, meter.Fact{InstanceID: "i1", DeployID: d.ID, Owner: "alice", Model: "alice/m1", GPU: "A100-80GB",
		NumGPUs: 1, Kind: meter.KindHeld, At: now.Add(-58 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	if err := src.Record(ctx, meter.Fact{InstanceID: "i1", Kind: meter.KindReady, At: now.Add(-56 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	src.set(meter.Sample{Counts: meter.Counts{Running: 1, Starting: 1, Held: 0, InFlight: 0}}, nil)

	q := url.Values{"from": {now.Add(-time.Minute).Format(time.RFC3339)}, "step": {"20s"}}
	got := decodeStats(t, h.do("alice", "GET", "/deploy/"+d.ID+"/stats?"+q.Encode(), nil))
	if got.DeployID != d.ID || !got.From.Equal(now.Add(-time.Minute)) || !got.To.Equal(now) || got.StepSeconds != 20 {
		t.Errorf("window = %s [%v, %v) by %vs; want %s [%v, %v) by 20s", got.DeployID, got.From, got.To, got.StepSeconds,
			d.ID, now.Add(-time.Minute), now)
	}
	wantNow := map[string]any{"at": now.Format(time.RFC3339), "running": 1.0, "starting": 1.0, "pending": 0.0,
		"draining": 0.0, "held": 0.0, "in_flight": 0.0,
		// The newest sample with a request.
		"last_request_at": now.Add(-50 * time.Second).Format(time.RFC3339)}
	if diff := cmp.Diff(wantNow, got.Now); diff != "" {
		t.Errorf("now (-want +got):\n%s", diff)
	}
	null := any(nil)
	gauges := func(p map[string]any, running, inFlight, inFlightMax float64) map[string]any {
		for k, v := range map[string]any{"running": running, "starting": 0.0, "pending": 0.0, "draining": 0.0,
			"held": 0.0, "held_max": 0.0, "in_flight": inFlight, "in_flight_max": inFlightMax} {
			p[k] = v
		}
		return p
	}
	want := []map[string]any{
		gauges(map[string]any{"at": now.Add(-time.Minute).Format(time.RFC3339),
			"requests_per_second": 0.4, "tokens_per_second": 4.0,
			// 2 of 4 under 100ms: p50 100ms, p99 in (100ms, 1s].
			"ttft_p50_ms": 100.0, "ttft_p99_ms": 982.0,
			"cold_starts": 1.0, "cold_start_seconds": 2.0}, 1.5, 1, 2),
		{"at": now.Add(-40 * time.Second).Format(time.RFC3339), "running": null, "starting": null, "pending": null,
			"draining": null, "held": null, "held_max": null, "in_flight": null, "in_flight_max": null,
			"requests_per_second": null, "tokens_per_second": null, "ttft_p50_ms": null, "ttft_p99_ms": null,
			"cold_starts": null, "cold_start_seconds": null},
		gauges(map[string]any{"at": now.Add(-20 * time.Second).Format(time.RFC3339),
			"requests_per_second": 0.0, "tokens_per_second": 0.0, "ttft_p50_ms": null, "ttft_p99_ms": null,
			"cold_starts": 0.0, "cold_start_seconds": null}, 1, 0, 0),
	}
	if diff := cmp.Diff(want, got.Points); diff != "" {
		t.Errorf("points (-want +got):\n%s", diff)
	}

	// A request in flight now is the last request.
	src.set(meter.Sample{Counts: meter.Counts{Running: 1, InFlight: 1}}, nil)
	got = decodeStats(t, h.do("alice", "GET", "/deploy/"+d.ID+"/stats", nil))
	if got.Now["last_request_at"] != now.Format(time.RFC3339) || got.Now["in_flight"] != 1.0 {
		t.Errorf("now with a request in flight = %v, want in_flight 1 and last_request_at now", got.Now)
	}
	// Default window: the last hour by the sample interval, 360 points.
	if !got.From.Equal(now.Add(-time.Hour)) || got.StepSeconds != 10 || len(got.Points) != 360 {
		t.Errorf("default: from %v by %vs, %d points; want %v by 10s, 360 points", got.From, got.StepSeconds, len(got.Points), now.Add(-time.Hour))
	}
	// A day by default: 240s steps, 360 points.
	q = url.Values{"from": {now.Add(-24 * time.Hour).Format(time.RFC3339)}}
	got = decodeStats(t, h.do("alice", "GET", "/deploy/"+d.ID+"/stats?"+q.Encode(), nil))
	if got.StepSeconds != 240 || len(got.Points) != 360 {
		t.Errorf("a day: step %vs, %d points; want 240s, 360", got.StepSeconds, len(got.Points))
	}
	// A step in seconds.
	got = decodeStats(t, h.do("alice", "GET", "/deploy/"+d.ID+"/stats?step=600", nil))
	if got.StepSeconds != 600 || len(got.Points) != 6 {
		t.Errorf("step=600: step %vs, %d points; want 600s, 6", got.StepSeconds, len(got.Points))
	}

	// Another user's deployment, and one that does not exist: not found.
	h.do("bob", "GET", "/deploy/"+d.ID+"/stats", nil).wantErr(t,
		apiError{Status: 404, Type: "not_found_error", Code: "deployment_not_found", Param: strp("deploy_id")})
	h.do("alice", "GET", "/deploy/nope/stats", nil).wantErr(t,
		apiError{Status: 404, Type: "not_found_error", Code: "deployment_not_found", Param: strp("deploy_id")})

	// Demand unreadable: 503, retry later.
	src.set(meter.Sample{}, errors.New("redis down"))
	r := h.do("alice", "GET", "/deploy/"+d.ID+"/stats", nil)
	r.wantErr(t, apiError{Status: 503, Type: "service_unavailable_error", Code: "stats_unavailable"})
	if r.header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
}

func TestStatsBadQueries(t *testing.T) {
	h, _, now := statsHarness(t)
	d := h.create("alice", "m1")
	for _, c := range []struct {
		query       string
		code, param string
	}{
		{"from=yesterday", "invalid_time", "from"},
		{"to=2026-13-01T00:00:00Z", "invalid_time", "to"},
		{"from=" + now.Format(time.RFC3339) + "&to=" + now.Add(-time.Hour).Format(time.RFC3339), "invalid_window", "from"},
		{"from=" + now.Format(time.RFC3339), "invalid_window", "from"}, // from == to (now)
		{"step=fast", "invalid_step", "step"},
		{"step=NaN", "invalid_step", "step"},
		{"step=1e300", "invalid_step", "step"},
		{"step=5s", "invalid_step", "step"}, // under the 10s sample interval
		{"step=0", "invalid_step", "step"},
		{"step=-10s", "invalid_step", "step"},
		// A week by 10s: 60480 points.
		{"step=10s&from=" + now.Add(-7*24*time.Hour).Format(time.RFC3339), "too_many_points", "step"},
	} {
		t.Run(c.query, func(t *testing.T) {
			h.do("alice", "GET", "/deploy/"+d.ID+"/stats?"+c.query, nil).wantErr(t,
				apiError{Status: 400, Type: "invalid_request_error", Code: c.code, Param: strp(c.param)})
		})
	}
}

func TestGPUs(t *testing.T) {
	h, _, _ := statsHarness(t)
	r := h.do("alice", "GET", "/gpus", nil)
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	var got map[string][]map[string]any
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string][]map[string]any{"gpus": {
		{"gpu": "A100-80GB", "total": 8.0, "free": 6.0, "price_per_gpu_hour_usd": 1.5},
		// Offered but not priced: null price.
		{"gpu": "H100-80GB", "total": 8.0, "free": 8.0, "price_per_gpu_hour_usd": nil},
	}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GET /gpus (-want +got):\n%s", diff)
	}
	h.do("", "GET", "/gpus", nil).wantErr(t, apiError{Status: 401, Type: "authentication_error", Code: "missing_token"})

	// The runtime cannot tell: the priced types, counts unknown.
	store, _ := metertest.Open(t)
	h2 := startHarness(t, Config{Store: store, Prices: meter.Prices{"A100-80GB": 1.5, "L4-24GB": 0.5},
		GPUs: fakeGPUs{err: errors.New("nomad unreachable")}})
	r = h2.do("alice", "GET", "/gpus", nil)
	got = nil
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatalf("status %d: %s: %v", r.status, r.body, err)
	}
	want = map[string][]map[string]any{"gpus": {
		{"gpu": "A100-80GB", "total": nil, "free": nil, "price_per_gpu_hour_usd": 1.5},
		{"gpu": "L4-24GB", "total": nil, "free": nil, "price_per_gpu_hour_usd": 0.5},
	}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GET /gpus with no inventory (-want +got):\n%s", diff)
	}
}
