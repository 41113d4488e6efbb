package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/thawhq/thaw/bench"
)

// coldSample is one cold start seen from outside thaw.
type coldSample struct {
	sent       time.Time // the request left the client
	serving    time.Time // the instance answered its first request (the bench's GET /health)
	firstByte  time.Time // the first byte of the answer reached the client
	holdHeader time.Duration
	startup    time.Duration // the simulator's startup delay
}

// runCold performs n cold starts on one thaw dev and returns the
// wake_to_serve and cold_start_overhead results.
func runCold(ctx context.Context, bin string, n int, startups []time.Duration) (wake, cold bench.Result) {
	wake = bench.Result{
		Name:   "wake_to_serve",
		Target: "p99 < 10 ms",
		Method: fmt.Sprintf("%d cold starts (a new min_instances 0 deployment each, one request), spread over "+
			"%d thaw dev processes whose --sim-startup differs (%v), so that the moment an instance "+
			"starts listening falls at different phases of thaw's readiness-probe ticker. "+
			"The bench learns the instance's port from thaw dev's \"model server started\" log line and "+
			"sends it GET /health at once: the simulator binds its port when it starts (as vLLM does before "+
			"loading weights) and answers nothing until loaded, so that request is answered the moment the "+
			"instance serves. wake_to_serve = first response byte of the held request at the client minus "+
			"the moment that /health answer arrived. It includes thaw's readiness probe, the dispatch, the "+
			"simulator answering max_tokens 1 and the way back through thaw (warm_overhead measures that "+
			"path).", n, len(startups), startups),
	}
	cold = bench.Result{
		Name:   "cold_start_overhead",
		Target: "p99 < 100 ms (dev mode); < 1 s on Nomad",
		Method: "The same cold starts: first-byte latency of the cold request at the client minus that " +
			"thaw dev's --sim-startup. Includes waking the autoscaler, starting the thaw sim process, " +
			"the readiness probe and the dispatch. On Nomad (figures under \"nomad\"): a one-node nomad agent -dev " +
			"with thaw's fake GPU plugin (4 x H100) and thaw server --engine sim --sim-startup 300ms; each cold " +
			"start is a new min_instances 0 deployment on one H100, one request, then the deployment is deleted " +
			"and its allocation waited out; the overhead includes Nomad's evaluation, placement, raw_exec task " +
			"start and thaw's event-stream and readiness handling.",
		Figures: map[string]any{
			"nomad": notRun("not selected (-only)"),
		},
	}
	fail := func(err error) (bench.Result, bench.Result) { return failed(wake, err), failed(cold, err) }

	var samples []coldSample
	for j, startup := range startups {
		k := n / len(startups)
		if j < n%len(startups) {
			k++
		}
		got, err := coldStarts(ctx, bin, k, startup)
		if err != nil {
			return fail(fmt.Errorf("--sim-startup %v: %w", startup, err))
		}
		samples = append(samples, got...)
	}

	var wakes, overheads, holds []time.Duration
	for _, s := range samples {
		wakes = append(wakes, s.firstByte.Sub(s.serving))
		overheads = append(overheads, s.firstByte.Sub(s.sent)-s.startup)
		holds = append(holds, s.holdHeader)
	}
	ws, cs := bench.Summarize(wakes), bench.Summarize(overheads)
	wake.Status, wake.Met = bench.StatusOK, ws.P99Ms < 10
	wake.Headline = fmt.Sprintf("p50 %.1f ms, p99 %.1f ms (n=%d)", ws.P50Ms, ws.P99Ms, ws.N)
	wake.Figures = map[string]any{"p50_ms": ws.P50Ms, "p99_ms": ws.P99Ms, "from_serving": ws}
	cold.Status, cold.Met = bench.StatusOK, cs.P99Ms < 100
	cold.Headline = fmt.Sprintf("p50 %.1f ms, p99 %.1f ms (n=%d)", cs.P50Ms, cs.P99Ms, cs.N)
	cold.Figures["p50_ms"], cold.Figures["p99_ms"], cold.Figures["overhead"] = cs.P50Ms, cs.P99Ms, cs
	var ms []float64
	for _, st := range startups {
		ms = append(ms, bench.Ms(st))
	}
	cold.Figures["sim_startups_ms"] = ms
	cold.Figures["x_thaw_cold_start_header"] = bench.Summarize(holds)
	return wake, cold
}

// coldStarts runs n cold starts on one thaw dev with the given simulator
// startup delay.
func coldStarts(ctx context.Context, bin string, n int, startup time.Duration) ([]coldSample, error) {
	p, err := startThaw(bin, "--sim-startup", startup.String(), "--sim-tokens-per-second", "100000", "--idle-timeout", "30m")
	if err != nil {
		return nil, err
	}
	defer p.Stop()
	starts := p.WatchStarts()
	client := keepAliveClient(4)
	if resp, err := client.Get(p.Base + "/healthz"); err == nil {
		resp.Body.Close() // opens the connection the cold requests reuse
	}
	thaw := target{url: p.Base + "/v1/openai/chat/completions", auth: true, client: client}
	var samples []coldSample
	for i := range n {
		s, err := coldStart(ctx, p, thaw, starts, fmt.Sprintf("cold-%02d", i))
		if err != nil {
			return nil, fmt.Errorf("cold start %d: %w", i, err)
		}
		s.startup = startup
		samples = append(samples, s)
	}
	return samples, nil
}

// coldStart creates a scale-to-zero deployment, sends it one request and
// watches its instance come up; then it deletes the deployment.
func coldStart(ctx context.Context, p *thawProc, thaw target, starts <-chan serverStarted, name string) (s coldSample, err error) {
	d, err := p.create(ctx, name, 8, 0, 1)
	if err != nil {
		return s, err
	}
	defer func() {
		// The deployment's own context is over by now; deletion gets a fresh one.
		if rerr := p.remove(context.WithoutCancel(ctx), d.ID); rerr != nil && err == nil {
			err = fmt.Errorf("delete: %w", rerr)
		}
		time.Sleep(100 * time.Millisecond) // let the instance stop before the next start
	}()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	answer := make(chan outcome, 1)
	s.sent = time.Now()
	go func() { answer <- thaw.send(ctx, completionBody(d.FullName, 1)) }()

	var addr string
	for addr == "" {
		select {
		case ev := <-starts:
			if ev.Deploy == d.ID {
				addr = ev.Addr
			}
		case <-ctx.Done():
			dd, _ := p.get(context.Background(), d.ID)
			return s, fmt.Errorf("no instance started for %s within 30s (instances %+v); thaw dev's log:\n%s", d.ID, dd.Instances, p.Tail())
		}
	}
	if s.serving, err = watchServe(ctx, addr); err != nil {
		return s, err
	}
	o := <-answer
	if o.err != nil || o.status != http.StatusOK {
		return s, fmt.Errorf("cold request: status %d, %v", o.status, o.err)
	}
	s.firstByte = o.firstByte
	s.holdHeader, _ = time.ParseDuration(o.header.Get("X-Thaw-Cold-Start"))
	return s, nil
}

// watchServe sends GET /health to the instance at addr and returns when it
// is answered: the moment the instance serves. The simulator binds its port
// at start and answers only once loaded, so the request waits for that
// (a refused connection, before the port is bound, is retried).
func watchServe(ctx context.Context, addr string) (time.Time, error) {
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/health", nil)
		if err != nil {
			return time.Time{}, err
		}
		resp, err := client.Do(req)
		if err == nil {
			t := time.Now()
			resp.Body.Close()
			return t, nil
		}
		if ctx.Err() != nil {
			return time.Time{}, fmt.Errorf("instance %s never served: %w", addr, err)
		}
		time.Sleep(200 * time.Microsecond)
	}
}
