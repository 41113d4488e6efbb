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
	// warmupMaxBody bounds what is read of the warm-up's answer: one
	// token's completion is a few hundred bytes.
	warmupMaxBody = 64 << 10
)

// WarmupUsage is what the warm-up of an instance made its model server
// count: one request and the tokens of the answer's OpenAI usage (zero
// when the answer has none). The model server's own counters include it;
// the meter counts an instance's requests and tokens from it, so that
// thaw's own request is not billed or shown as a user's.
type WarmupUsage struct {
	Requests, PromptTokens, CompletionTokens int64
}

// deployment is the fleet's view of one deployment. Guarded by Fleet.mu.
type deployment struct {
	d             deploy.Deployment
	desired       int
	desiredReason string
	instances     map[string]*inst
	// quotaHeld is how many wanted instances the GPU quota holds back,
	// since quotaSince.
	quotaHeld  int
	quotaSince time.Time
	// pendingReason is the shortfall last reported (EventPending).
	pendingReason string

	// Crash-loop tracking: consecutive failures of instances that never got
	// ready.
	failures     int
	failReason   string
	backoffUntil time.Time
	failed       bool
}

// inst is one instance the fleet asked the runtime for.
type inst struct {
	id     string
	phase  Phase
	addr   string
	reason string
	ready  bool
	// draining: leaving (scale-down, start timeout); it no longer counts
	// toward desired but holds its GPUs until the runtime stops it.
	draining bool
	// since is when the fleet asked for the instance, then when the
	// runtime first reported it running (the start timeout counts from
	// it), by the fleet's clock.
	since  time.Time
	cancel context.CancelFunc // stops the readiness probe
	// shown is the state last seen (noteLocked), since shownSince; readyAt
	// is when it became ready.
	shown      State
	shownSince time.Time
	readyAt    time.Time
	// warmup is what the warm-up consumed, set when it got ready.
	warmup WarmupUsage
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
	if ds.failed && t.running < ds.desired {
		why = append(why, fmt.Sprintf("not retrying after %d consecutive failures: update the deployment to retry", ds.failures))
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
	f.meterEventLocked(ev, now) // an instance of a deleted deployment too
	ds, in := f.instLocked(ev.DeployID, ev.ID)
	if in == nil {
		return
	}
	in.reason = ev.Reason
	switch ev.Phase {
	case PhasePending:
		in.phase = PhasePending
	case PhaseRunning:
		if in.phase != PhaseRunning {
			in.since = now
		}
		in.phase = PhaseRunning
		in.addr = ev.Addr
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
			if !in.ready && !in.draining { // a stop the fleet asked is no crash
				f.failLocked(ds, ev.Reason, now)
			}
		}
		f.pushLocked(ds)
	}
}

// instLocked returns instance id of deployment deployID, or nils when the
// fleet does not know it (any more). Called with mu held.
func (f *Fleet) instLocked(deployID, id string) (*deployment, *inst) {
	ds, ok := f.deployments[deployID]
	if !ok {
		return nil, nil
	}
	in, ok := ds.instances[id]
	if !ok {
		return nil, nil
	}
	return ds, in
}

// failLocked counts, at now, the failure of one of ds's instances that
// never got ready: after CrashLoopAfter in a row the deployment is failed,
// held and new requests fail at once, and no instance is started until it
// is updated. Called with mu held.
func (f *Fleet) failLocked(ds *deployment, reason string, now time.Time) {
	ds.failures++
	ds.failReason = reason
	ds.backoffUntil = now.Add(backoff(ds.failures))
	if ds.failures >= f.cfg.CrashLoopAfter && !ds.failed {
		ds.failed = true
		f.eventLocked(Event{Kind: EventDeploymentFailed, DeployID: ds.d.ID, Owner: ds.d.Owner, At: now, Reason: reason})
		f.cfg.Endpoints.Fail(ds.d.ID, "deployment failed: "+reason)
		f.log.Warn("deployment failed: not retrying until it is updated", "deploy", ds.d.ID, "failures", ds.failures, "reason", reason)
	}
}

// retryLocked forgets ds's failures: an instance got ready, or the user
// updated the deployment. Called with mu held.
func (f *Fleet) retryLocked(ds *deployment) {
	ds.failures, ds.failReason, ds.backoffUntil = 0, "", time.Time{}
	if ds.failed {
		ds.failed = false
		f.cfg.Endpoints.Recover(ds.d.ID)
	}
}

// stopHungLocked stops ds's instances that have held their GPUs for
// StartTimeout at now without becoming ready (a model server stuck
// loading, or one that never answers): each counts as a failure. Called
// with mu held.
func (f *Fleet) stopHungLocked(ds *deployment, now time.Time) {
	for _, in := range ds.instances {
		if !in.hung(now, f.cfg.StartTimeout) {
			continue
		}
		reason := fmt.Sprintf("start timeout: not ready within %s", f.cfg.StartTimeout)
		f.log.Warn("instance not ready in time: stopping it", "deploy", ds.d.ID, "instance", in.id, "running_since", in.since, "start_timeout", f.cfg.StartTimeout)
		in.draining = true
		in.stopProbe()
		f.stoppingLocked(in.id, reason)
		f.failLocked(ds, reason, now)
		go f.stopInstance(in.id)
	}
}

// hung reports whether the instance has been running, not ready, for
// timeout at now.
func (in *inst) hung(now time.Time, timeout time.Duration) bool {
	return in.phase == PhaseRunning && !in.ready && !in.draining && now.Sub(in.since) >= timeout
}

func backoff(failures int) time.Duration {
	d := time.Second << min(failures-1, 5)
	return min(d, 30*time.Second)
}

// onReady marks a probed instance ready at now and routes to it. One
// already leaving (stopped on a start timeout or a scale-down while its
// probe answered) stays out.
func (f *Fleet) onReady(r probeResult, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ds, in := f.instLocked(r.deployID, r.instanceID)
	if in == nil || in.ready || in.draining {
		return
	}
	in.ready, in.readyAt, in.warmup = true, now, r.warmup
	f.retryLocked(ds)
	f.meterReadyLocked(in.id, now)
	f.pushLocked(ds)
	f.log.Info("instance ready", "deploy", ds.d.ID, "instance", in.id, "addr", in.addr, "load_time", now.Sub(in.since).Round(time.Millisecond))
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
			if u, err := f.warmUp(ctx, addr, model); err == nil {
				select {
				case f.readyCh <- probeResult{deployID, id, u}:
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
// routing.WarmupHeader, and returns what it consumed; an error unless it
// answers 200 within warmupTimeout.
func (f *Fleet) warmUp(ctx context.Context, addr, model string) (WarmupUsage, error) {
	body, err := json.Marshal(map[string]any{"model": model, "prompt": "Hi", "max_tokens": 1})
	if err != nil {
		return WarmupUsage{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, warmupTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+warmupPath, bytes.NewReader(body))
	if err != nil {
		return WarmupUsage{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(routing.WarmupHeader, "1")
	// The probes' client, without its timeout: ctx bounds this request.
	client := *f.cfg.HTTPClient
	client.Timeout = 0
	resp, err := client.Do(req)
	if err != nil {
		return WarmupUsage{}, fmt.Errorf("warm-up: %w", err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, warmupMaxBody))
	if resp.StatusCode != http.StatusOK {
		return WarmupUsage{}, fmt.Errorf("warm-up: %s %s answered %s: %s", http.MethodPost, warmupPath, resp.Status, bytes.TrimSpace(msg[:min(len(msg), 512)]))
	}
	return warmupUsage(msg), nil
}

// warmupUsage reads the usage of a warm-up's answer: one request and its
// tokens; no tokens when the answer carries no usage (or is cut or not
// JSON): the model server generated anyway.
func warmupUsage(answer []byte) WarmupUsage {
	var a struct {
		Usage struct {
			PromptTokens     int64 `json:"prompt_tokens"`
			CompletionTokens int64 `json:"completion_tokens"`
		} `json:"usage"`
	}
	if json.Unmarshal(answer, &a) != nil || a.Usage.PromptTokens < 0 || a.Usage.CompletionTokens < 0 {
		return WarmupUsage{Requests: 1}
	}
	return WarmupUsage{Requests: 1, PromptTokens: a.Usage.PromptTokens, CompletionTokens: a.Usage.CompletionTokens}
}

// stopProbe ends the instance's readiness probe, if one runs.
func (in *inst) stopProbe() {
	if in.cancel != nil {
		in.cancel()
	}
}
