package main

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"time"

	"github.com/thawhq/thaw/bench"
)

// nomadStartup is --sim-startup of the thaw server on Nomad.
const nomadStartup = 300 * time.Millisecond

// runNomad starts a one-node Nomad with fake GPUs and thaw server --engine
// sim, then measures cold starts (when cold) and the burst (when burst is
// not nil) there. It adds its figures under "nomad" to those results and
// folds them into their verdicts.
func runNomad(ctx context.Context, bin string, coldN int, cold *bench.Result, burst *bench.Result, cfg burstConfig) {
	note := func(err error) {
		for _, r := range []*bench.Result{cold, burst} {
			if r != nil && r.Status == bench.StatusOK {
				r.Figures["nomad"] = map[string]string{"status": bench.StatusFailed, "why": err.Error()}
				r.Met = false
			}
		}
	}
	c, err := startNomad(filepath.Dir(bin))
	if err != nil {
		note(err)
		return
	}
	defer c.Stop()
	cfg.Startup = nomadStartup
	p, err := c.startServer(bin, "--sim-startup", nomadStartup.String(), "--sim-tokens-per-second", fmt.Sprint(cfg.TPS),
		"--idle-timeout", "30m", "--hold-timeout", "2m", "--gpu-quota", fmt.Sprint(cfg.MaxInstances))
	if err != nil {
		note(err)
		return
	}
	defer p.Stop()
	if cold != nil && cold.Status == bench.StatusOK {
		over, hdr, split, err := nomadColdStarts(ctx, c, p, coldN, nomadStartup)
		if err != nil {
			cold.Figures["nomad"] = map[string]string{"status": bench.StatusFailed, "why": err.Error()}
			cold.Met = false
		} else {
			s := bench.Summarize(over)
			cold.Figures["nomad"] = map[string]any{
				"overhead": s, "p50_ms": s.P50Ms, "p99_ms": s.P99Ms, "sim_startup_ms": bench.Ms(nomadStartup),
				"x_thaw_cold_start_header": bench.Summarize(hdr), "met": s.P99Ms < 1000,
				"split": map[string]any{
					"to_allocation_created":                                 bench.Summarize(split.toAlloc),
					"to_task_started":                                       bench.Summarize(split.toStarted),
					"after_task_start_minus_sim_startup":                    bench.Summarize(split.afterListen),
					"instance_ready_log_after_task_start_minus_sim_startup": bench.Summarize(split.readyAfterListen),
					"first_byte_after_instance_ready_log":                   bench.Summarize(split.byteAfterReady),
					"nomad_api_running_after_task_start_minus_sim_startup":  bench.Summarize(split.runningAfterListen),
				},
			}
			cold.Met = cold.Met && s.P99Ms < 1000
			cold.Headline += fmt.Sprintf("; Nomad: p50 %.0f ms, max %.0f ms (n=%d)", s.P50Ms, s.MaxMs, s.N)
		}
	}
	if burst != nil && burst.Status == bench.StatusOK {
		figs, headline, met, err := burstOn(ctx, p, "H100-80GB", cfg)
		if err != nil {
			burst.Figures["nomad"] = map[string]string{"status": bench.StatusFailed, "why": err.Error()}
			burst.Met = false
			return
		}
		figs["met"] = met
		burst.Figures["nomad"] = figs
		burst.Met = burst.Met && met
		burst.Headline += "; Nomad: " + headline
	}
}

// nomadColdStarts runs n cold starts through thaw server on the cluster:
// a new min_instances 0 deployment each, one request, then the deployment
// is deleted and its allocation waited out. It returns first-byte latency
// minus startup for each.
func nomadColdStarts(ctx context.Context, c *nomadCluster, p *thawProc, n int, startup time.Duration) (overheads, headers []time.Duration, sp coldSplit, err error) {
	client := keepAliveClient(4)
	thaw := target{url: p.Base + "/v1/openai/chat/completions", auth: true, client: client}
	readyLog := p.WatchMsg("instance ready")
	for i := range n {
		for len(readyLog) > 0 {
			<-readyLog
		}
		d, err := p.createOn(ctx, "H100-80GB", fmt.Sprintf("cold-%02d", i), 8, 0, 1)
		if err != nil {
			return nil, nil, sp, err
		}
		rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		sent := time.Now()
		running := c.watchRunning(rctx, 5*time.Millisecond)
		o := thaw.send(rctx, completionBody(d.FullName, 1))
		cancel()
		if o.err != nil || o.status != http.StatusOK {
			return nil, nil, sp, fmt.Errorf("cold request %d: status %d, %v\n%s", i, o.status, o.err, p.Tail())
		}
		overheads = append(overheads, o.firstByte.Sub(sent)-startup)
		h, _ := time.ParseDuration(o.header.Get("X-Thaw-Cold-Start"))
		headers = append(headers, h)
		if created, started, err := c.liveAllocTimes(); err == nil {
			sp.toAlloc = append(sp.toAlloc, created.Sub(sent))
			sp.toStarted = append(sp.toStarted, started.Sub(sent))
			sp.afterListen = append(sp.afterListen, o.firstByte.Sub(started)-startup)
			if at := <-running; !at.IsZero() {
				sp.runningAfterListen = append(sp.runningAfterListen, at.Sub(started)-startup)
			}
			select {
			case seen := <-readyLog:
				sp.readyAfterListen = append(sp.readyAfterListen, seen.Sub(started)-startup)
				sp.byteAfterReady = append(sp.byteAfterReady, o.firstByte.Sub(seen))
			default:
			}
		}
		if err := p.remove(ctx, d.ID); err != nil {
			return nil, nil, sp, err
		}
		if err := c.WaitNoAllocs(30 * time.Second); err != nil {
			return nil, nil, sp, err
		}
	}
	return overheads, headers, sp, nil
}

// coldSplit divides Nomad cold starts, each measured from the request.
type coldSplit struct {
	toAlloc     []time.Duration // until Nomad created the allocation
	toStarted   []time.Duration // until Nomad's task event "Started"
	afterListen []time.Duration // first byte minus (Started + sim startup)
	// readyAfterListen is thaw's "instance ready" log line (read by the
	// bench) minus (Started + sim startup); byteAfterReady is the first
	// byte minus that line.
	readyAfterListen, byteAfterReady []time.Duration
	// runningAfterListen is when the bench's poll of Nomad's HTTP API
	// first saw the allocation running, minus (Started + sim startup).
	runningAfterListen []time.Duration
}

// watchRunning polls Nomad every interval until an allocation is running
// and sends when it saw it (the zero time when ctx ends first).
func (c *nomadCluster) watchRunning(ctx context.Context, interval time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	go func() {
		for {
			var allocs []struct{ ClientStatus string }
			if c.GetJSON("/v1/allocations", &allocs) == nil {
				for _, a := range allocs {
					if a.ClientStatus == "running" {
						ch <- time.Now()
						return
					}
				}
			}
			select {
			case <-ctx.Done():
				ch <- time.Time{}
				return
			case <-time.After(interval):
			}
		}
	}()
	return ch
}

// liveAllocTimes are the creation time and task start of the one running
// allocation.
func (c *nomadCluster) liveAllocTimes() (created, started time.Time, err error) {
	var allocs []struct{ ID, ClientStatus string }
	if err := c.GetJSON("/v1/allocations", &allocs); err != nil {
		return created, started, err
	}
	for _, a := range allocs {
		if a.ClientStatus != "running" {
			continue
		}
		var full struct {
			CreateTime int64
			TaskStates map[string]struct {
				Events []struct {
					Type string
					Time int64
				}
			}
		}
		if err := c.GetJSON("/v1/allocation/"+a.ID, &full); err != nil {
			return created, started, err
		}
		for _, ts := range full.TaskStates {
			for _, ev := range ts.Events {
				if ev.Type == "Started" {
					return time.Unix(0, full.CreateTime), time.Unix(0, ev.Time), nil
				}
			}
		}
	}
	return created, started, fmt.Errorf("no running allocation with a started task")
}
