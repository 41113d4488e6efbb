package test

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/thawhq/thaw/meter"
)

// statsReply is GET /deploy/{id}/stats's JSON; nullable fields are
// pointers.
type statsReply struct {
	DeployID    string  `json:"deploy_id"`
	StepSeconds float64 `json:"step_seconds"`
	Now         struct {
		Running       int        `json:"running"`
		Held          int        `json:"held"`
		InFlight      int        `json:"in_flight"`
		LastRequestAt *time.Time `json:"last_request_at"`
	} `json:"now"`
	Points []meter.Point `json:"points"`
}

// seriesSum is what a user reads off a deployment's charts: the most
// instances running, whether any step had requests and tokens, a p50 time
// to first token, and the cold starts with the longest.
type seriesSum struct {
	maxRunning                float64
	requests, tokens, p50     bool
	coldStarts                int
	coldStartSeconds, p50Last float64
}

func (r statsReply) sum() seriesSum {
	var s seriesSum
	for _, p := range r.Points {
		if p.Running != nil {
			s.maxRunning = max(s.maxRunning, *p.Running)
		}
		s.requests = s.requests || (p.RequestsPerSecond != nil && *p.RequestsPerSecond > 0)
		s.tokens = s.tokens || (p.TokensPerSecond != nil && *p.TokensPerSecond > 0)
		if p.TTFTP50ms != nil {
			s.p50, s.p50Last = true, *p.TTFTP50ms
		}
		if p.ColdStarts != nil {
			s.coldStarts += *p.ColdStarts
		}
		if p.ColdStartSeconds != nil {
			s.coldStartSeconds = max(s.coldStartSeconds, *p.ColdStartSeconds)
		}
	}
	return s
}

func (p *thawProc) stats(t *testing.T, id, query string) statsReply {
	t.Helper()
	r := p.do(t, http.MethodGet, "/deploy/"+id+"/stats?"+query, devToken, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET /deploy/%s/stats?%s: %s", id, query, r)
	}
	var s statsReply
	r.decode(t, &s)
	return s
}

// TestDeploymentStats: a deployment at zero woken by streamed requests
// shows, on GET /deploy/{id}/stats sampled every second, an instance
// running, requests and tokens per second, a time to first token and one
// cold start with its duration; its live in_flight is 1 during a long
// stream and back to 0 within 3s of the client leaving. GET /gpus lists
// thaw dev's inventory with the prices.
func TestDeploymentStats(t *testing.T) {
	t.Parallel()
	p := startThaw(t, thawOpts{GPUs: "A100-80GB:4,H100-80GB:2", SimStartup: time.Second,
		Args: []string{"--stats-interval=1s", "--gpu-prices=A100-80GB=1.5"}})
	d := p.create(t, devToken, llmRequest("charted", "A100-80GB", 1, 4, 0, 1))
	model := "dev/charted"

	// Three streamed requests wake it and are answered.
	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		r, err := p.postRead(ctx, "/v1/openai/chat/completions", "", chatBody(model, 8, true))
		cancel()
		if err != nil || r.Status != http.StatusOK || !strings.Contains(string(r.Body), "[DONE]") {
			t.Fatalf("streamed request %d: %v %s", i, err, r)
		}
	}

	// The samples of the next seconds show it all.
	var got seriesSum
	var last statsReply
	if !waitFor(15*time.Second, 500*time.Millisecond, func() bool {
		last = p.stats(t, d.ID, "step=1s")
		got = last.sum()
		return got.maxRunning >= 1 && got.requests && got.tokens && got.p50 && got.coldStarts >= 1
	}) {
		t.Fatalf("stats never showed a running instance, requests, tokens, a TTFT and a cold start: %+v (step %vs, %d points)",
			got, last.StepSeconds, len(last.Points))
	}
	t.Logf("stats: %+v", got)
	if last.DeployID != d.ID || last.StepSeconds != 1 || len(last.Points) != 3600 {
		t.Errorf("window: %s by %vs, %d points; want %s by 1s, 3600 points (the last hour)", last.DeployID, last.StepSeconds, len(last.Points), d.ID)
	}
	if got.coldStarts != 1 || got.coldStartSeconds < 1 || got.coldStartSeconds > 30 {
		t.Errorf("cold starts %d, longest %vs; want 1 of at least the simulator's 1s start", got.coldStarts, got.coldStartSeconds)
	}
	if got.p50Last <= 0 {
		t.Errorf("ttft_p50_ms %v, want > 0", got.p50Last)
	}
	if last.Now.Running != 1 || last.Now.LastRequestAt == nil {
		t.Errorf("now: running %d, last_request_at %v; want 1 and a time", last.Now.Running, last.Now.LastRequestAt)
	}

	// A long stream is in flight while it lasts, and not once the client
	// leaves.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, err := p.postUntimed(ctx, "/v1/openai/chat/completions", "", chatBody(model, 2000, true))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("long stream: %v %v", err, resp)
	}
	if !bufio.NewScanner(resp.Body).Scan() {
		t.Fatal("long stream: no first line")
	}
	inFlight := func(want int) bool {
		return p.stats(t, d.ID, "").Now.InFlight == want
	}
	if !waitFor(3*time.Second, 50*time.Millisecond, func() bool { return inFlight(1) }) {
		t.Errorf("now.in_flight during a long stream: %d, want 1", p.stats(t, d.ID, "").Now.InFlight)
	}
	cancel()
	resp.Body.Close()
	if !waitFor(3*time.Second, 50*time.Millisecond, func() bool { return inFlight(0) }) {
		t.Errorf("now.in_flight 3s after the client left: %d, want 0", p.stats(t, d.ID, "").Now.InFlight)
	}

	// GET /gpus: thaw dev's inventory, the one instance's GPU taken.
	r := p.do(t, http.MethodGet, "/gpus", devToken, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET /gpus: %s", r)
	}
	var gpus struct {
		GPUs []struct {
			GPU   string   `json:"gpu"`
			Total *int     `json:"total"`
			Free  *int     `json:"free"`
			Price *float64 `json:"price_per_gpu_hour_usd"`
		} `json:"gpus"`
	}
	r.decode(t, &gpus)
	type gpu struct {
		GPU         string
		Total, Free int
		Price       float64
	}
	var gotGPUs []gpu
	for _, g := range gpus.GPUs {
		if g.Total == nil || g.Free == nil || g.Price == nil {
			t.Fatalf("GET /gpus: %s has a null count or price: %s", g.GPU, r)
		}
		gotGPUs = append(gotGPUs, gpu{g.GPU, *g.Total, *g.Free, *g.Price})
	}
	// H100-80GB keeps thaw's built-in price (2.4 USD per GPU-hour).
	want := []gpu{{"A100-80GB", 4, 3, 1.5}, {"H100-80GB", 2, 2, 2.4}}
	if diff := cmp.Diff(want, gotGPUs, cmp.AllowUnexported(gpu{})); diff != "" {
		t.Errorf("GET /gpus (-want +got):\n%s", diff)
	}

	// Bad queries are the caller's error, named.
	r = p.do(t, http.MethodGet, "/deploy/"+d.ID+"/stats?step=0.1s", devToken, nil)
	checkError(t, "step under the sample interval", r, []int{http.StatusBadRequest}, "step")
}
