package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/thawhq/thaw/bench"
	"github.com/thawhq/thaw/deploy"
)

// warmConfig sizes the warm_overhead scenario.
type warmConfig struct {
	Requests    int   // measured requests per target and concurrency level
	Warmup      int   // unmeasured requests per target first
	Concurrency []int // closed-loop concurrency levels; the first one is judged
	Rounds      int   // the targets alternate this many times, pooled
	Envoy       bool  // also measure through Envoy (xDS and static)
}

// namedTarget is one path to the same simulator instance.
type namedTarget struct {
	name string
	t    target
}

// runWarm measures small completions straight to one simulator instance,
// through thaw dev, through Envoy configured by thaw dev's xDS server, and
// through Envoy with a static config to that same instance.
func runWarm(ctx context.Context, bin string, cfg warmConfig) bench.Result {
	res := bench.Result{
		Name:   "warm_overhead",
		Target: fmt.Sprintf("added p50 < 0.3 ms (concurrency %d); Envoy (xDS) within noise of Envoy (static)", cfg.Concurrency[0]),
		Method: "One thaw dev (--xds-addr, thaw itself the activator) with a warm deployment (min_instances 1, " +
			"max_batch_size 256, --sim-tokens-per-second 1e9). Non-streaming chat completions with max_tokens 1, " +
			"closed loop over keep-alive connections, in alternating rounds, to four paths ending at the same " +
			"simulator instance: direct; thaw dev's /v1/openai; Envoy configured by thaw's xDS (ext_authz to " +
			"thaw's /authz, then straight to the instance); Envoy with a static cluster to the instance (no " +
			"thaw, Envoy's own floor). Both Envoys run --concurrency 1. Latency is send to body read at the " +
			"client; added = path minus direct (or minus static Envoy) at the same percentile. Envoy's " +
			"/clusters and stats count what reached the activator during the measured rounds. thaw_authz_alone " +
			"is the same request sent straight to thaw's /authz (what ext_authz asks on every request).",
		Figures: map[string]any{},
	}
	envoyWhy := "not selected"
	if _, err := os.Stat(envoyBinFor(bin)); cfg.Envoy && err != nil {
		cfg.Envoy, envoyWhy = false, envoyBinFor(bin)+" missing (make deps)"
	}
	rig, err := startWarmRig(ctx, bin, cfg.Envoy)
	defer rig.stop()
	if err != nil {
		return failed(res, err)
	}
	if rig.edge == nil {
		res.Figures["envoy"] = notRun(envoyWhy)
	}
	var headline []string
	for i, conc := range cfg.Concurrency {
		fig, line, err := rig.measure(ctx, cfg, conc)
		if err != nil {
			return failed(res, err)
		}
		headline = append(headline, line)
		res.Figures[fmt.Sprintf("concurrency_%d", conc)] = fig
		if i == 0 {
			addP50 := fig["added_p50_ms"].(float64)
			res.Met = addP50 < 0.3
			res.Figures["added_p50_ms"], res.Figures["added_p99_ms"] = addP50, fig["added_p99_ms"]
			if ev, ok := fig["envoy"].(map[string]any); ok {
				// Within noise: under 0.1 ms at p50 and nothing through the activator.
				envoyMet := ev["added_vs_static_p50_ms"].(float64) < 0.1 && ev["activator_requests"].(int64) == 0
				res.Figures["envoy_met"] = envoyMet
				res.Met = res.Met && envoyMet
			}
		}
	}
	res.Status = bench.StatusOK
	res.Headline = strings.Join(headline, "; ")
	return res
}

// warmRig is what runWarm measures through: one thaw dev with a warm
// deployment on one simulator instance and, when Envoy is measured, an
// Envoy configured by thaw dev's xDS and one with a static config, both to
// that instance.
type warmRig struct {
	p         *thawProc
	body      []byte     // the request every path gets
	addr      string     // the simulator instance's host:port
	apiAddr   string     // thaw dev's host:port
	cluster   string     // the deployment's Envoy cluster
	edge      *envoyProc // the xDS Envoy; nil when Envoy is not measured
	edgeURL   string     // the xDS Envoy's listener
	staticURL string     // the static Envoy's listener
	stops     []func()   // what stop stops, in the order it started
}

// stop stops what the rig started, the last started first.
func (r *warmRig) stop() {
	for _, stop := range slices.Backward(r.stops) {
		stop()
	}
}

// startWarmRig starts thaw dev (with its xDS server when envoy is set) and
// a warm deployment, then the two Envoys when envoy is set. The rig it
// returns, even with an error, is to be stopped.
func startWarmRig(ctx context.Context, bin string, envoy bool) (*warmRig, error) {
	r := &warmRig{}
	extra := []string{"--sim-startup", "100ms", "--sim-tokens-per-second", "1e9", "--idle-timeout", "30m"}
	var xdsAddr, edgeAddr, adminAddr string
	if envoy {
		var err error
		if xdsAddr, err = freeAddr(); err == nil {
			if edgeAddr, err = freeAddr(); err == nil {
				adminAddr, err = freeAddr()
			}
		}
		if err != nil {
			return r, err
		}
		extra = append(extra, "--xds-addr", xdsAddr, "--edge-addr", edgeAddr, "--envoy-admin", "http://"+adminAddr)
	}
	p, err := startThaw(bin, extra...)
	if err != nil {
		return r, err
	}
	r.p, r.stops = p, append(r.stops, p.Stop)
	starts := p.WatchStarts()
	d, err := p.create(ctx, "warm", 256, 1, 1)
	if err != nil {
		return r, err
	}
	if _, err := p.waitInstances(ctx, d.ID, 30*time.Second, func(d deploy.View) bool { return d.Instances.Running == 1 }); err != nil {
		return r, err
	}
	select {
	case ev := <-starts:
		r.addr = ev.Addr
	case <-time.After(5 * time.Second):
		return r, fmt.Errorf("no \"model server started\" log line:\n%s", p.Tail())
	}
	r.body = completionBody(d.FullName, 1)
	r.cluster = "deploy-" + d.ID
	r.apiAddr = strings.TrimPrefix(p.Base, "http://")
	if !envoy {
		return r, nil
	}
	return r, r.startEnvoys(ctx, bin, xdsAddr, edgeAddr, adminAddr)
}

// startEnvoys starts the Envoy thaw dev's xDS server (at xdsAddr)
// configures, listening on edgeAddr, and waits until it routes to the
// instance; then a static Envoy to the instance.
func (r *warmRig) startEnvoys(ctx context.Context, bin, xdsAddr, edgeAddr, adminAddr string) error {
	boot, err := exec.CommandContext(ctx, bin, "envoy-bootstrap", "--xds-addr", xdsAddr, "--admin", adminAddr).Output()
	if err != nil {
		return fmt.Errorf("thaw envoy-bootstrap: %w", err)
	}
	edge, err := startEnvoy(envoyBinFor(bin), boot, adminAddr)
	if err != nil {
		return err
	}
	r.stops = append(r.stops, edge.Stop)
	if err := waitHealthy(ctx, edge, r.cluster, r.addr); err != nil {
		return err
	}
	sListen, err := freeAddr()
	if err != nil {
		return err
	}
	sAdmin, err := freeAddr()
	if err != nil {
		return err
	}
	conf, err := staticEnvoyConfig(sListen, sAdmin, r.addr)
	if err != nil {
		return err
	}
	static, err := startEnvoy(envoyBinFor(bin), conf, sAdmin)
	if err != nil {
		return err
	}
	r.stops = append(r.stops, static.Stop)
	r.edge, r.edgeURL, r.staticURL = edge, "http://"+edgeAddr, "http://"+sListen
	return nil
}

// targets are the paths measured at concurrency conc, each with its own
// keep-alive connections.
func (r *warmRig) targets(conc int) []namedTarget {
	targets := []namedTarget{
		{"direct", target{url: "http://" + r.addr + "/v1/chat/completions", client: keepAliveClient(conc)}},
		{"thaw_dev", target{url: r.p.Base + "/v1/openai/chat/completions", auth: true, client: keepAliveClient(conc)}},
	}
	if r.edge != nil {
		targets = append(targets,
			namedTarget{"envoy_xds", target{url: r.edgeURL + "/v1/chat/completions", auth: true, client: keepAliveClient(conc)}},
			namedTarget{"envoy_static", target{url: r.staticURL + "/v1/chat/completions", client: keepAliveClient(conc)}},
			// What ext_authz asks thaw on each request through the xDS Envoy.
			namedTarget{"thaw_authz_alone", target{url: r.p.Base + "/authz/v1/chat/completions", auth: true, client: keepAliveClient(conc)}})
	}
	return targets
}

// measure warms every path up, then sends cfg.Requests to each at
// concurrency conc in cfg.Rounds alternating rounds, and returns the
// figures of that concurrency and its part of the headline.
func (r *warmRig) measure(ctx context.Context, cfg warmConfig, conc int) (map[string]any, string, error) {
	targets := r.targets(conc)
	for _, t := range targets {
		if _, _, n, err := closedLoop(ctx, t.t, r.body, cfg.Warmup, conc); n > 0 {
			return nil, "", fmt.Errorf("warm-up against %s: %d failed, first: %v", t.t.url, n, err)
		}
	}
	var actBefore, instBefore int64
	if r.edge != nil {
		var err error
		if actBefore, instBefore, err = activatorCount(ctx, r.edge, r.cluster, r.apiAddr, r.addr); err != nil {
			return nil, "", err
		}
	}
	lats := make([][]time.Duration, len(targets))
	walls := make([]time.Duration, len(targets))
	per := cfg.Requests / cfg.Rounds
	for range cfg.Rounds {
		for j, t := range targets {
			lat, wall, n, err := closedLoop(ctx, t.t, r.body, per, conc)
			if n > 0 {
				return nil, "", fmt.Errorf("%s at concurrency %d: %d failed, first: %v", t.t.url, conc, n, err)
			}
			lats[j] = append(lats[j], lat...)
			walls[j] += wall
		}
	}
	fig := map[string]any{}
	sums := map[string]bench.Summary{}
	rps := map[string]float64{}
	for j, t := range targets {
		sums[t.name] = bench.Summarize(lats[j])
		rps[t.name] = float64(len(lats[j])) / walls[j].Seconds()
		fig[t.name] = sums[t.name]
		fig[t.name+"_rps"] = round1(rps[t.name])
	}
	addP50 := round3(sums["thaw_dev"].P50Ms - sums["direct"].P50Ms)
	addP99 := round3(sums["thaw_dev"].P99Ms - sums["direct"].P99Ms)
	ratio := round3(rps["thaw_dev"] / rps["direct"])
	fig["added_p50_ms"], fig["added_p99_ms"], fig["throughput_ratio"] = addP50, addP99, ratio
	headline := fmt.Sprintf("c=%d: thaw dev +%.3f ms p50, +%.3f ms p99, x%.2f rps", conc, addP50, addP99, ratio)
	if r.edge == nil {
		return fig, headline, nil
	}
	act, inst, err := activatorCount(ctx, r.edge, r.cluster, r.apiAddr, r.addr)
	if err != nil {
		return nil, "", err
	}
	x, s, dr := sums["envoy_xds"], sums["envoy_static"], sums["direct"]
	ev := map[string]any{
		"added_vs_static_p50_ms": round3(x.P50Ms - s.P50Ms), "added_vs_static_p99_ms": round3(x.P99Ms - s.P99Ms),
		"added_vs_direct_p50_ms": round3(x.P50Ms - dr.P50Ms), "added_vs_direct_p99_ms": round3(x.P99Ms - dr.P99Ms),
		"static_added_vs_direct_p50_ms": round3(s.P50Ms - dr.P50Ms),
		"authz_call_p50_ms":             sums["thaw_authz_alone"].P50Ms,
		"throughput_ratio_vs_static":    round3(rps["envoy_xds"] / rps["envoy_static"]),
		"activator_requests":            act - actBefore,
		"instance_requests":             inst - instBefore,
		"measured_requests":             sums["envoy_xds"].N,
	}
	fig["envoy"] = ev
	headline += fmt.Sprintf("; Envoy xDS vs static +%.3f ms p50, +%.3f ms p99 (vs direct +%.3f p50), activator got %d of %d",
		ev["added_vs_static_p50_ms"], ev["added_vs_static_p99_ms"], ev["added_vs_direct_p50_ms"], act-actBefore, sums["envoy_xds"].N)
	return fig, headline, nil
}

// waitHealthy waits until Envoy has addr as a healthy host of cluster.
func waitHealthy(ctx context.Context, e *envoyProc, cluster, addr string) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		hs, err := e.HostStats(ctx, cluster, "health_flags")
		if err == nil && hs[addr] == "healthy" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("envoy: %s not a healthy host of %s within 20s (%v, %v):\n%s", addr, cluster, hs, err, e.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// activatorCount is how many requests Envoy sent to the activator (the
// thaw-activator cluster plus the activator host of the deployment's
// cluster, at priority 1) and to the instance so far.
func activatorCount(ctx context.Context, e *envoyProc, cluster, activator, instance string) (act, inst int64, err error) {
	n, err := e.Stat(ctx, "cluster.thaw-activator.upstream_rq_total")
	if err != nil {
		return 0, 0, err
	}
	hs, err := e.HostStats(ctx, cluster, "rq_total")
	if err != nil {
		return 0, 0, err
	}
	a, _ := strconv.ParseInt(hs[activator], 10, 64)
	i, _ := strconv.ParseInt(hs[instance], 10, 64)
	return max(n, 0) + a, i, nil
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
