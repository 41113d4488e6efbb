package main

import (
	"context"
	"fmt"
	"time"

	"github.com/thawhq/thaw/bench"
)

// warmConfig sizes the warm_overhead scenario.
type warmConfig struct {
	Requests    int   // measured requests per target and concurrency level
	Warmup      int   // unmeasured requests per target first
	Concurrency []int // closed-loop concurrency levels; the first one is judged
	Rounds      int   // direct and thaw alternate this many times, pooled
}

// runWarm measures small completions straight to one simulator instance and
// through thaw dev to that same instance.
func runWarm(ctx context.Context, bin string, cfg warmConfig) bench.Result {
	res := bench.Result{
		Name:   "warm_overhead",
		Target: fmt.Sprintf("added p50 < 0.3 ms (concurrency %d)", cfg.Concurrency[0]),
		Method: "One thaw dev with a warm deployment (min_instances 1, max_batch_size 256, " +
			"--sim-tokens-per-second 100000). Non-streaming chat completions with max_tokens 1, " +
			"closed loop over keep-alive connections, sent straight to that deployment's simulator " +
			"instance and through thaw dev's /v1/openai endpoint, in alternating rounds. " +
			"Latency is send to body read at the client; added = thaw minus direct.",
		Figures: map[string]any{
			"envoy": notRun("the Envoy path (make cluster topology) is not built yet"),
		},
	}
	p, err := startThaw(bin, "--sim-startup", "100ms", "--sim-tokens-per-second", "1e9", "--idle-timeout", "30m")
	if err != nil {
		return failed(res, err)
	}
	defer p.Stop()
	starts := p.WatchStarts()
	d, err := p.create(ctx, "warm", 256, 1, 1)
	if err != nil {
		return failed(res, err)
	}
	if _, err := p.waitInstances(ctx, d.ID, 30*time.Second, func(d deployment) bool { return d.Instances.Running == 1 }); err != nil {
		return failed(res, err)
	}
	var addr string
	select {
	case ev := <-starts:
		addr = ev.Addr
	case <-time.After(5 * time.Second):
		return failed(res, fmt.Errorf("no \"model server started\" log line:\n%s", p.Tail()))
	}
	body := completionBody(d.FullName, 1)

	headline := ""
	for i, conc := range cfg.Concurrency {
		direct := target{url: "http://" + addr + "/v1/chat/completions", client: keepAliveClient(conc)}
		thaw := target{url: p.Base + "/v1/openai/chat/completions", auth: true, client: keepAliveClient(conc)}
		var dLat, tLat []time.Duration
		var dWall, tWall time.Duration
		for _, t := range []target{direct, thaw} {
			if _, _, n, err := closedLoop(ctx, t, body, cfg.Warmup, conc); n > 0 {
				return failed(res, fmt.Errorf("warm-up against %s: %d failed, first: %v", t.url, n, err))
			}
		}
		per := cfg.Requests / cfg.Rounds
		for range cfg.Rounds {
			for _, x := range []struct {
				t    target
				lat  *[]time.Duration
				wall *time.Duration
			}{{direct, &dLat, &dWall}, {thaw, &tLat, &tWall}} {
				lat, wall, n, err := closedLoop(ctx, x.t, body, per, conc)
				if n > 0 {
					return failed(res, fmt.Errorf("%s at concurrency %d: %d failed, first: %v", x.t.url, conc, n, err))
				}
				*x.lat = append(*x.lat, lat...)
				*x.wall += wall
			}
		}
		ds, ts := bench.Summarize(dLat), bench.Summarize(tLat)
		dRPS := float64(len(dLat)) / dWall.Seconds()
		tRPS := float64(len(tLat)) / tWall.Seconds()
		addP50, addP99 := round3(ts.P50Ms-ds.P50Ms), round3(ts.P99Ms-ds.P99Ms)
		ratio := round3(tRPS / dRPS)
		res.Figures[fmt.Sprintf("concurrency_%d", conc)] = map[string]any{
			"direct": ds, "thaw_dev": ts,
			"direct_rps": round1(dRPS), "thaw_dev_rps": round1(tRPS),
			"added_p50_ms": addP50, "added_p99_ms": addP99, "throughput_ratio": ratio,
		}
		if i == 0 {
			res.Met = addP50 < 0.3
			res.Figures["added_p50_ms"], res.Figures["added_p99_ms"] = addP50, addP99
		}
		if headline != "" {
			headline += "; "
		}
		headline += fmt.Sprintf("c=%d: +%.3f ms p50, +%.3f ms p99, throughput x%.2f", conc, addP50, addP99, ratio)
	}
	res.Status = bench.StatusOK
	res.Headline = headline
	return res
}

func failed(r bench.Result, err error) bench.Result {
	r.Status = bench.StatusFailed
	r.Why = err.Error()
	return r
}

func notRun(why string) map[string]string {
	return map[string]string{"status": bench.StatusNotRun, "why": why}
}

func round1(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }

func round3(f float64) float64 {
	if f < 0 {
		return -round3(-f)
	}
	return float64(int64(f*1000+0.5)) / 1000
}
