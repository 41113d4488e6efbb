package main

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/thawhq/thaw/bench"
	"github.com/thawhq/thaw/test/e2e"
)

// holdConfig sizes the hold_capacity scenario.
type holdConfig struct {
	Requests int           // held at once
	Startup  time.Duration // --sim-startup; must outlast sending all requests
}

// runHold measures holding over HTTP/1.1 (a connection per held request,
// what a client without an edge proxy does) and over h2c (held requests
// multiplexed over a few connections, what Envoy in front of the activator
// does). The target is judged on h2c, the production path; both are reported.
func runHold(ctx context.Context, bin string, cfg holdConfig) bench.Result {
	h1 := runHoldOnce(ctx, bin, cfg, false)
	if h1.Status != bench.StatusOK {
		return h1
	}
	h2 := runHoldOnce(ctx, bin, cfg, true)
	if h2.Status != bench.StatusOK {
		return h2
	}
	res := h2
	res.Method = "Two runs. " + h1.Method + " Then the same with h2c (cleartext HTTP/2, at most 1000 streams per connection), as Envoy would hold them; the target is judged on h2c."
	res.Figures = map[string]any{"http1": h1.Figures, "h2c": h2.Figures}
	res.Headline = "h2c: " + h2.Headline + "; HTTP/1.1 (a connection each): " + h1.Headline
	return res
}

// runHoldOnce holds cfg.Requests requests on a cold deployment and reads
// thaw dev's resident memory while they are held.
func runHoldOnce(ctx context.Context, bin string, cfg holdConfig, h2c bool) bench.Result {
	res := bench.Result{
		Name:   "hold_capacity",
		Target: fmt.Sprintf("RSS < 200 MB with %d held; all answered", cfg.Requests),
		Method: fmt.Sprintf("%d chat completions (max_tokens 1), each on its own connection (no keep-alive), "+
			"at a cold deployment (max_batch_size 256, max_instances 4, --sim-startup %v). Once "+
			"thaw_requests_held on /metrics counts them all, the bench reads VmRSS of the thaw dev "+
			"process from /proc (its model servers are separate processes, not counted); then it waits "+
			"for every answer.", cfg.Requests, cfg.Startup),
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < uint64(cfg.Requests)+1000 {
		return failed(res, fmt.Errorf("open-file limit %d is too low for %d sockets: raise the hard limit (ulimit -Hn)", lim.Cur, cfg.Requests))
	}
	p, err := startThaw(bin, "--sim-startup", cfg.Startup.String(), "--sim-tokens-per-second", "100000",
		"--gpu-quota", "4", "--max-held", fmt.Sprint(cfg.Requests), "--hold-timeout", "3m", "--idle-timeout", "30m")
	if err != nil {
		return failed(res, err)
	}
	defer p.Stop()
	d, err := p.create(ctx, "hold", 256, 0, 4)
	if err != nil {
		return failed(res, err)
	}
	baseRSS, _, err := rssKB(p.PID)
	if err != nil {
		return failed(res, err)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Startup+2*time.Minute)
	defer cancel()

	thaw := target{url: p.Base + "/v1/openai/chat/completions", auth: true, client: holdClient(h2c)}
	body := completionBody(d.FullName, 1)
	outcomes := make([]outcome, cfg.Requests)
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := range outcomes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outcomes[i] = thaw.send(ctx, body)
		}()
		if i%500 == 499 {
			time.Sleep(10 * time.Millisecond) // lets thaw accept; the listen backlog is finite
		}
	}

	allHeld, heldRSS, maxHeld, err := waitAllHeld(ctx, p, cfg.Requests, t0, t0.Add(cfg.Startup))
	if err != nil {
		return failed(res, err)
	}
	wg.Wait()
	_, peakRSS, _ := rssKB(p.PID)

	ok, errs, firstErr, release := tally(outcomes)
	mb := func(kb int64) float64 { return round1(float64(kb) / 1024) }
	res.Figures = map[string]any{
		"requests": cfg.Requests, "max_held_seen": maxHeld, "answered_ok": ok, "errors": errs,
		"rss_idle_mb": mb(baseRSS), "rss_held_mb": mb(heldRSS), "rss_peak_mb": mb(peakRSS),
		"time_to_all_held_ms": bench.Ms(allHeld), "release_ms": bench.Ms(release),
	}
	if firstErr != "" {
		res.Figures["first_error"] = firstErr
	}
	if allHeld == 0 {
		return failed(res, fmt.Errorf("thaw never held all %d requests at once (max seen %d); %d answered, %d errors, first: %s",
			cfg.Requests, maxHeld, ok, errs, firstErr))
	}
	res.Status = bench.StatusOK
	res.Met = heldRSS < 200*1024 && ok == cfg.Requests
	res.Headline = fmt.Sprintf("%.0f MB RSS with %d held (idle %.0f MB, peak %.0f MB); %d/%d answered, %d errors",
		mb(heldRSS), cfg.Requests, mb(baseRSS), mb(peakRSS), ok, cfg.Requests, errs)
	return res
}

// holdClient sends each request on its own connection, or, with h2c, over
// cleartext HTTP/2 connections that multiplex them.
func holdClient(h2c bool) *http.Client {
	tr := &http.Transport{DisableKeepAlives: true, DisableCompression: true}
	if h2c {
		tr = &http.Transport{DisableCompression: true, Protocols: new(http.Protocols)}
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	return &http.Client{Transport: tr}
}

// waitAllHeld polls p's metrics until it holds n requests, ctx is done or
// deadline passes. It returns how long after t0 (when sending began) all
// were held (0: never), p's RSS then, and the most held seen.
func waitAllHeld(ctx context.Context, p *thawProc, n int, t0, deadline time.Time) (allHeld time.Duration, heldRSS int64, maxHeld int, err error) {
	for allHeld == 0 && ctx.Err() == nil && time.Now().Before(deadline) {
		if held, err := heldRequests(ctx, p.Metrics); err == nil {
			maxHeld = max(maxHeld, held)
			if held >= n {
				allHeld = time.Since(t0)
				if heldRSS, _, err = rssKB(p.PID); err != nil {
					return 0, 0, maxHeld, err
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return allHeld, heldRSS, maxHeld, nil
}

// tally counts the answered and failed requests, with the first failure,
// and the time from the first answer to the last.
func tally(outcomes []outcome) (ok, errs int, firstErr string, release time.Duration) {
	var first, last time.Time
	for _, o := range outcomes {
		if o.err != nil || o.status != http.StatusOK {
			errs++
			if firstErr == "" {
				firstErr = fmt.Sprintf("status %d: %v", o.status, o.err)
			}
			continue
		}
		ok++
		if first.IsZero() || o.done.Before(first) {
			first = o.done
		}
		if o.done.After(last) {
			last = o.done
		}
	}
	return ok, errs, firstErr, last.Sub(first)
}

// heldRequests sums thaw_requests_held over deployments from /metrics on
// the operators' listener at base.
func heldRequests(ctx context.Context, base string) (int, error) {
	m, err := e2e.ScrapeMetrics(ctx, base+"/metrics")
	if err != nil {
		return 0, err
	}
	total, found := m.Sum("thaw_requests_held", nil)
	if !found {
		return 0, fmt.Errorf("no thaw_requests_held in /metrics")
	}
	return int(total), nil
}
