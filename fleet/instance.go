package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/routing"
)

// The warm-up: once a model server answers /health and lists the model,
// one completion of one token must succeed before the instance is routable,
// so that an instance whose engine cannot generate (vLLM on CPUs answers
// /health and then crashes on its first request when the model does not
// fit the backend) never takes a client's request. It runs once per
// instance unless it fails.
const (
	// warmupPath is the model server's completions endpoint (vLLM's API).
	warmupPath = "/v1/completions"
	// warmupTimeout bounds the warm-up: the first request of a vLLM on
	// CPUs compiles for seconds, far over a probe's timeout.
	warmupTimeout = 30 * time.Second
	// warmupRetry is how long after a failed warm-up the instance is
	// probed again: a failing engine is not asked every probe tick.
	warmupRetry = time.Second
)

// deployment is the fleet's view of one deployment. Guarded by Fleet.mu.
type deployment struct {
	d             deploy.Deployment
	desired       int
	desiredReason string
	instances     map[string]*inst
	// quotaHeld is how many wanted instances the GPU quota holds back.
	quotaHeld int

	// Crash-loop tracking: consecutive failures of instances that never got
	// ready.
	failures     int
	failReason   string
	backoffUntil time.Time
	failed       bool
}

// inst is one instance the fleet asked the runtime for.
type inst struct {
	id       string
	phase    Phase
	addr     string
	reason   string
	ready    bool
	draining bool
	since    time.Time
	cancel   context.CancelFunc // stops the readiness probe
}

// active returns the instances that count toward desired (not draining).
func (ds *deployment) active() []*inst {
	out := make([]*inst, 0, len(ds.instances))
	for _, in := range ds.instances {
		if !in.draining {
			out = append(out, in)
		}
	}
	return out
}

// live builds the deploy API's status from the state; instances are
// classified by inst.state, as in the metrics.
func (ds *deployment) live() deploy.Live {
	t := ds.tally()
	l := deploy.Live{Instances: deploy.Instances{Running: t.running, Desired: ds.desired}}
	if p := ds.desired - t.running; p > 0 {
		l.Instances.Pending = p
	}
	var why []string
	if ds.quotaHeld > 0 {
		why = append(why, fmt.Sprintf("%d instance(s) held back by the GPU quota of user %s (each needs %d %s)", ds.quotaHeld, ds.d.Owner, ds.d.Config.NumGPUs, ds.d.Config.GPU))
	}
	if t.pending > 0 {
		why = append(why, fmt.Sprintf("%d instance(s) not placed: %s", t.pending, t.reasons[0]))
	}
	if t.starting > 0 {
		why = append(why, fmt.Sprintf("%d instance(s) starting (loading weights)", t.starting))
	}
	if ds.failReason != "" && t.running < ds.desired {
		why = append(why, "last failure: "+ds.failReason)
	}
	if t.running < ds.desired {
		l.Instances.Reason = strings.Join(why, "; ")
	}
	switch {
	case ds.failed:
		l.Status = deploy.StatusFailed
		l.FailReason = ds.failReason
	case t.running < ds.d.Settings.MinInstances:
		l.Status = deploy.StatusDeploying
	default:
		l.Status = deploy.StatusRunning
	}
	return l
}

// onEvent applies a runtime report received at now. Runs on Run's
// goroutine.
func (f *Fleet) onEvent(ctx context.Context, ev Instance, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ds, ok := f.deployments[ev.DeployID]
	if !ok {
		return
	}
	in, ok := ds.instances[ev.ID]
	if !ok {
		return
	}
	in.reason = ev.Reason
	switch ev.Phase {
	case PhasePending:
		in.phase = PhasePending
	case PhaseRunning:
		in.phase = PhaseRunning
		in.addr = ev.Addr
		in.since = now
		in.stopProbe()
		pctx, cancel := context.WithCancel(ctx)
		in.cancel = cancel
		go f.probe(pctx, ds.d.ID, ds.d.FullName(), in.id, ev.Addr)
	case PhaseFailed, PhaseStopped:
		if in.cancel != nil {
			in.cancel()
		}
		delete(ds.instances, ev.ID)
		delete(f.instOwner, ev.ID)
		if ev.Phase == PhaseFailed {
			f.log.Warn("instance failed", "deploy", ds.d.ID, "instance", ev.ID, "reason", ev.Reason, "was_ready", in.ready)
			if !in.ready {
				ds.failures++
				ds.failReason = ev.Reason
				ds.backoffUntil = now.Add(backoff(ds.failures))
				if ds.failures >= f.cfg.CrashLoopAfter && !ds.failed {
					ds.failed = true
					f.cfg.Endpoints.Fail(ds.d.ID, "deployment failed: "+ev.Reason)
				}
			}
		}
		f.pushLocked(ds)
	}
}

func backoff(failures int) time.Duration {
	d := time.Second << min(failures-1, 5)
	return min(d, 30*time.Second)
}

// onReady marks a probed instance ready and routes to it.
func (f *Fleet) onReady(r probeResult) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ds, ok := f.deployments[r.deployID]
	if !ok {
		return
	}
	in, ok := ds.instances[r.instanceID]
	if !ok || in.ready {
		return
	}
	in.ready = true
	ds.failures, ds.failReason = 0, ""
	if ds.failed {
		ds.failed = false
		f.cfg.Endpoints.Recover(ds.d.ID)
	}
	f.pushLocked(ds)
	f.log.Info("instance ready", "deploy", ds.d.ID, "instance", in.id, "addr", in.addr, "load_time", time.Since(in.since).Round(time.Millisecond))
}

// pushLocked sends the deployment's ready, non-draining instances to the
// request path. Called with mu held.
func (f *Fleet) pushLocked(ds *deployment) {
	addrs := map[string]string{}
	for _, in := range ds.instances {
		if in.ready && !in.draining {
			addrs[in.id] = in.addr
		}
	}
	f.cfg.Endpoints.SetEndpoints(ds.d.ID, ds.d.Config.MaxBatchSize, addrs)
}

// probe polls the instance until its model server answers /health, lists
// the model in /v1/models and answers the warm-up, then reports it on
// readyCh.
func (f *Fleet) probe(ctx context.Context, deployID, model, id, addr string) {
	t := time.NewTicker(f.cfg.ProbeInterval)
	defer t.Stop()
	for {
		if f.ready(ctx, addr, model) {
			if err := f.warmUp(ctx, addr, model); err == nil {
				select {
				case f.readyCh <- probeResult{deployID, id}:
				case <-ctx.Done():
				}
				return
			} else if ctx.Err() == nil {
				f.log.Warn("instance answers but does not generate; retrying", "deploy", deployID, "instance", id, "err", err)
				select {
				case <-ctx.Done():
					return
				case <-time.After(warmupRetry):
				}
				continue
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (f *Fleet) ready(ctx context.Context, addr, model string) bool {
	get := func(path string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
		if err != nil {
			return nil, err
		}
		return f.cfg.HTTPClient.Do(req)
	}
	resp, err := get("/health")
	if err != nil {
		return false
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false
	}
	resp, err = get("/v1/models")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var models struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&models) != nil {
		return false
	}
	for _, m := range models.Data {
		if m.ID == model {
			return true
		}
	}
	return false
}

// warmUp asks the model server at addr for one token of model, marked with
// routing.WarmupHeader, and returns an error unless it answers 200 within
// warmupTimeout.
func (f *Fleet) warmUp(ctx context.Context, addr, model string) error {
	body, err := json.Marshal(map[string]any{"model": model, "prompt": "Hi", "max_tokens": 1})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, warmupTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+warmupPath, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(routing.WarmupHeader, "1")
	// The probes' client, without its timeout: ctx bounds this request.
	client := *f.cfg.HTTPClient
	client.Timeout = 0
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("warm-up: %s %s answered %s: %s", http.MethodPost, warmupPath, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// stopProbe ends the instance's readiness probe, if one runs.
func (in *inst) stopProbe() {
	if in.cancel != nil {
		in.cancel()
	}
}
