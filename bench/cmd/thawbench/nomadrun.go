package main

import (
	"context"
	"fmt"
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
	p, err := c.startServer(bin, "--sim-startup", nomadStartup.String(), "--sim-tokens-per-second", fmt.Sprint(cfg.TPS),
		"--idle-timeout", "30m", "--hold-timeout", "2m", "--gpu-quota", fmt.Sprint(cfg.MaxInstances))
	if err != nil {
		note(err)
		return
	}
	defer p.Stop()
	if cold != nil && cold.Status == bench.StatusOK {
		over, hdr, err := nomadColdStarts(ctx, c, p, coldN, nomadStartup)
		if err != nil {
			cold.Figures["nomad"] = map[string]string{"status": bench.StatusFailed, "why": err.Error()}
			cold.Met = false
		} else {
			s := bench.Summarize(over)
			cold.Figures["nomad"] = map[string]any{
				"overhead": s, "p50_ms": s.P50Ms, "p99_ms": s.P99Ms, "sim_startup_ms": bench.Ms(nomadStartup),
				"x_thaw_cold_start_header": bench.Summarize(hdr), "met": s.P99Ms < 1000,
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
