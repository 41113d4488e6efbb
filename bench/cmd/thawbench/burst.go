package main

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/thawhq/thaw/bench"
)

// burstConfig sizes the burst scenario.
type burstConfig struct {
	Requests     int           // sent at once
	MaxBatch     int           // the deployment's max_batch_size
	MaxInstances int           // its max_instances (and the GPU quota)
	MaxTokens    int           // per request
	TPS          int           // --sim-tokens-per-second
	Startup      time.Duration // --sim-startup
}

// runBurst sends cfg.Requests requests at once at a cold deployment and
// watches it scale.
func runBurst(ctx context.Context, bin string, cfg burstConfig) bench.Result {
	res := bench.Result{
		Name:   "burst",
		Target: fmt.Sprintf("zero errors; %d instances running within 1 s", cfg.MaxInstances),
		Method: fmt.Sprintf("%d concurrent chat completions (max_tokens %d at %d tokens/s) released at once at a "+
			"cold deployment (min_instances 0, max_batch_size %d, max_instances %d, --gpu-quota %d, "+
			"--sim-startup %v). GET /deploy/{id} every 20 ms from the release; times are from the release. "+
			"The running time includes the simulator's startup. The same burst runs on Nomad (figures under "+
			"\"nomad\": thaw server --engine sim on a one-node nomad agent -dev with 4 fake H100s, "+
			"--sim-startup 300ms), judged on the same target.",
			cfg.Requests, cfg.MaxTokens, cfg.TPS, cfg.MaxBatch, cfg.MaxInstances, cfg.MaxInstances, cfg.Startup),
	}
	p, err := startThaw(bin, "--sim-startup", cfg.Startup.String(), "--sim-tokens-per-second", fmt.Sprint(cfg.TPS),
		"--gpu-quota", fmt.Sprint(cfg.MaxInstances), "--idle-timeout", "30m", "--hold-timeout", "2m")
	if err != nil {
		return failed(res, err)
	}
	defer p.Stop()
	figs, headline, met, err := burstOn(ctx, p, "A100-80GB", cfg)
	if err != nil {
		return failed(res, err)
	}
	res.Status, res.Figures, res.Headline, res.Met = bench.StatusOK, figs, headline, met
	return res
}

// burstOn sends the burst at a new cold deployment of p on gpu and returns
// its figures, headline and whether the target was met.
func burstOn(ctx context.Context, p *thawProc, gpu string, cfg burstConfig) (map[string]any, string, bool, error) {
	d, err := p.createOn(ctx, gpu, "burst", cfg.MaxBatch, 0, cfg.MaxInstances)
	if err != nil {
		return nil, "", false, err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()

	thaw := target{url: p.Base + "/v1/openai/chat/completions", auth: true, client: keepAliveClient(cfg.Requests)}
	body := completionBody(d.FullName, cfg.MaxTokens)
	outcomes, t0, allDone := sendAtOnce(ctx, thaw, body, cfg.Requests)
	// Watch the deployment until the burst is answered.
	w := watchScale(ctx, p, d.ID, cfg.MaxInstances, t0, allDone)
	toDesired, toRunning := w.toDesired, w.toRunning

	var lat []time.Duration
	var last time.Time
	errs := 0
	statuses := map[string]int{}
	var firstErr string
	for _, o := range outcomes {
		key := fmt.Sprint(o.status)
		if o.err != nil {
			key = "transport_error"
		}
		statuses[key]++
		if o.err != nil || o.status != http.StatusOK {
			errs++
			if firstErr == "" {
				firstErr = fmt.Sprintf("status %d: %v", o.status, o.err)
			}
			continue
		}
		lat = append(lat, o.latency)
		if o.done.After(last) {
			last = o.done
		}
	}
	met := errs == 0 && toRunning > 0 && toRunning <= time.Second
	figs := map[string]any{
		"requests": cfg.Requests, "errors": errs, "statuses": statuses,
		"time_to_max_desired_ms": bench.Ms(toDesired), "time_to_max_running_ms": bench.Ms(toRunning),
		"max_running_seen": w.maxRunning, "time_to_last_response_ms": bench.Ms(last.Sub(t0)),
		"latency": bench.Summarize(lat), "sim_startup_ms": bench.Ms(cfg.Startup),
		"timeline_ms_desired_running": w.timeline,
	}
	if firstErr != "" {
		figs["first_error"] = firstErr
	}
	at := func(d time.Duration) string {
		if d == 0 {
			return "never"
		}
		return fmt.Sprintf("%.0f ms", bench.Ms(d))
	}
	headline := fmt.Sprintf("%d errors; %d desired at %s, running at %s; last response at %.0f ms",
		errs, cfg.MaxInstances, at(toDesired), at(toRunning), bench.Ms(last.Sub(t0)))
	return figs, headline, met, nil
}

// sendAtOnce starts n senders of body to t and releases them together. It
// returns their outcomes (complete once done is closed), when they were
// released, and done, closed once every answer is read.
func sendAtOnce(ctx context.Context, t target, body []byte, n int) (outcomes []outcome, t0 time.Time, done <-chan struct{}) {
	outcomes = make([]outcome, n)
	var ready, wg sync.WaitGroup
	release := make(chan struct{})
	for i := range outcomes {
		wg.Add(1)
		ready.Add(1)
		go func() {
			defer wg.Done()
			ready.Done()
			<-release
			outcomes[i] = t.send(ctx, body)
		}()
	}
	ready.Wait()
	t0 = time.Now()
	close(release)
	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()
	return outcomes, t0, allDone
}

// scaleWatch is how a deployment scaled during a burst released at t0.
type scaleWatch struct {
	toDesired, toRunning time.Duration // since t0 until max_instances desired, running; 0: never
	maxRunning           int
	timeline             [][3]float64 // [ms since t0, desired, running] at each change
}

// watchScale reads deployment id every 20ms until done is closed.
func watchScale(ctx context.Context, p *thawProc, id string, maxInstances int, t0 time.Time, done <-chan struct{}) scaleWatch {
	var w scaleWatch
	for {
		if dd, err := p.get(ctx, id); err == nil {
			el := time.Since(t0)
			if w.toDesired == 0 && dd.Instances.Desired >= maxInstances {
				w.toDesired = el
			}
			if w.toRunning == 0 && dd.Instances.Running >= maxInstances {
				w.toRunning = el
			}
			w.maxRunning = max(w.maxRunning, dd.Instances.Running)
			if n := len(w.timeline); n == 0 || w.timeline[n-1][1] != float64(dd.Instances.Desired) || w.timeline[n-1][2] != float64(dd.Instances.Running) {
				w.timeline = append(w.timeline, [3]float64{bench.Ms(el), float64(dd.Instances.Desired), float64(dd.Instances.Running)})
			}
		}
		select {
		case <-done:
			return w
		case <-time.After(20 * time.Millisecond):
		}
	}
}
