package test

import (
	"context"
	"math"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/test/e2e"
)

// perSecond prices an A100-80GB at 3600 USD an hour: one USD per GPU-second,
// so that costs in these tests read as seconds.
const perSecond = "--gpu-prices=A100-80GB=3600"

// lifetime is what the test saw of one model-server process: it started
// after after and was seen at seen; it was last seen alive at last and was
// gone at gone.
type lifetime struct{ after, seen, last, gone time.Time }

// simWatch polls the simulators under the current thaw every 10ms and
// records each one's lifetime.
type simWatch struct {
	root atomic.Int64 // the current thaw's PID
	mu   sync.Mutex
	life map[int]*lifetime
	proc map[int]procInfo
}

func watchSims(t *testing.T, root int) *simWatch {
	w := &simWatch{life: map[int]*lifetime{}, proc: map[int]procInfo{}}
	w.root.Store(int64(root))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		prev := time.Now()
		for ctx.Err() == nil {
			w.poll(prev)
			prev = time.Now()
			time.Sleep(10 * time.Millisecond)
		}
	}()
	return w
}

func (w *simWatch) poll(prev time.Time) {
	sims := simsUnder(int(w.root.Load()))
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range sims {
		if _, ok := w.life[s.PID]; !ok {
			w.life[s.PID] = &lifetime{after: prev, seen: now, last: now}
			w.proc[s.PID] = s
		}
	}
	for pid, l := range w.life {
		if !l.gone.IsZero() {
			continue
		}
		if w.proc[pid].alive() {
			l.last = now
		} else {
			l.gone = now
		}
	}
}

// bounds are the least and most GPU-seconds the processes seen can have
// held, with numGPUs GPUs each; all must be gone.
func (w *simWatch) bounds(t *testing.T, numGPUs int) (lo, hi float64, n int) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	for pid, l := range w.life {
		if l.gone.IsZero() {
			t.Fatalf("simulator %d still running", pid)
		}
		lo += l.last.Sub(l.seen).Seconds() * float64(numGPUs)
		hi += l.gone.Sub(l.after).Seconds() * float64(numGPUs)
	}
	return lo, hi, len(w.life)
}

// TestUsageMatchesTheRuntime: a 2-GPU deployment runs three instances in
// turn: one until thaw restarts (SIGTERM), one until thaw is SIGKILLed (its
// end is closed from localrt's heartbeat after the restart), one until the
// deployment is deleted. /deploy/{id}/usage reports the GPU-seconds the
// model-server processes really lived, within 1 s x num_gpus, plus the
// heartbeat's 1 s for the killed run: nothing lost, nothing counted twice.
// The weekly statement's total equals the ledger's cost.
func TestUsageMatchesTheRuntime(t *testing.T) {
	t.Parallel()
	opts := thawOpts{Args: []string{perSecond}}
	p := startThaw(t, opts)
	opts.DataDir = p.DataDir
	w := watchSims(t, p.PID())
	const gpus = 2
	d := p.create(t, devToken, llmRequest("metered", "A100-80GB", gpus, 4, 1, 1))
	running := func(d deploy.View) bool { return d.Instances.Running == 1 }

	p.waitDeploy(t, d.ID, 30*time.Second, "first instance running", running)
	time.Sleep(2 * time.Second)
	if !p.stop() {
		t.Fatal("thaw did not stop on SIGTERM")
	}
	p = startThaw(t, opts)
	w.root.Store(int64(p.PID()))
	p.waitDeploy(t, d.ID, 30*time.Second, "second instance running after a restart", running)
	time.Sleep(2 * time.Second)
	p.kill9()
	p = startThaw(t, opts)
	w.root.Store(int64(p.PID()))
	p.waitDeploy(t, d.ID, 30*time.Second, "third instance running after a kill", running)
	time.Sleep(2 * time.Second)
	if r := p.do(t, http.MethodDelete, "/deploy/"+d.ID, devToken, nil); r.Status != http.StatusOK {
		t.Fatalf("DELETE: %s", r)
	}
	if !waitFor(15*time.Second, 20*time.Millisecond, func() bool { return len(simsUnder(p.PID())) == 0 }) {
		t.Fatal("the deleted deployment's simulator is still running")
	}
	time.Sleep(50 * time.Millisecond) // a last poll of the watcher
	lo, hi, n := w.bounds(t, gpus)
	if n < 3 { // one per run; a start that failed (its port taken) adds one
		t.Fatalf("saw %d simulators, want 3 (one per run)", n)
	}

	var rep e2e.UsageReport
	if !waitFor(10*time.Second, 100*time.Millisecond, func() bool {
		r := p.do(t, http.MethodGet, "/deploy/"+d.ID+"/usage", devToken, nil)
		if r.Status != http.StatusOK {
			t.Fatalf("GET /deploy/%s/usage: %s", d.ID, r)
		}
		r.decode(t, &rep)
		return len(rep.Items) == 1 && rep.Total.GPUSeconds >= lo-gpus
	}) {
		t.Fatalf("usage %+v never reached the %.2f GPU-seconds the processes lived", rep, lo)
	}
	tol := 1.0*gpus + 1.0*gpus // 1 s x num_gpus, and the heartbeat's bound for the killed run
	got := rep.Total.GPUSeconds
	t.Logf("usage %.3f GPU-s (loading %.3f), processes lived %.3f..%.3f GPU-s", got, rep.Total.LoadingSeconds, lo, hi)
	if got < lo-tol || got > hi+tol {
		t.Errorf("usage %.3f GPU-s, the processes lived %.3f..%.3f GPU-s (tolerance %.0f)", got, lo, hi, tol)
	}
	if it := rep.Items[0]; it.DeployID != d.ID || it.GPU != "A100-80GB" || it.NumGPUs != gpus || it.LoadingSeconds <= 0 || it.LoadingSeconds >= it.GPUSeconds {
		t.Errorf("usage item %+v: want this deployment, A100-80GB x2, some loading time within the GPU time", it)
	}
	if math.Abs(rep.Total.CostUSD-got) > 0.01 {
		t.Errorf("cost %.4f USD at 1 USD per GPU-second, want %.4f", rep.Total.CostUSD, got)
	}

	var inv struct {
		Statements []struct {
			TotalUSD float64 `json:"total_usd"`
			Lines    []struct {
				DeployID string  `json:"deploy_id"`
				GPUHours float64 `json:"gpu_hours"`
			} `json:"lines"`
		} `json:"statements"`
	}
	r := p.do(t, http.MethodGet, "/usage/invoices", devToken, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET /usage/invoices: %s", r)
	}
	r.decode(t, &inv)
	sum := 0.0
	for _, st := range inv.Statements {
		sum += st.TotalUSD
	}
	if math.Abs(sum-rep.Total.CostUSD) > 0.01 {
		t.Errorf("statements total %.2f USD, the ledger %.4f USD", sum, rep.Total.CostUSD)
	}
}

// TestSpendingLimit: a user with a 6 USD monthly limit runs a 2-GPU
// deployment at 1 USD per GPU-second. Their webhook gets the 50, 80 and
// 100% events, signed; within seconds of crossing the limit the
// deployment is at zero with no model server left, an inference request
// gets OpenAI's 429 insufficient_quota, and min_instances above 0 is
// refused. Raising the limit lets the next request wake the deployment.
func TestSpendingLimit(t *testing.T) {
	t.Parallel()
	p := startThaw(t, thawOpts{Args: []string{perSecond, "--spending-check-interval=500ms"}})
	hooks := e2e.ReceiveWebhooks(t, "hook-secret")
	r := p.do(t, http.MethodPut, "/account", devToken, map[string]any{
		"spending_limit_usd": 6, "webhook_url": hooks.URL + "/thaw", "webhook_secret": "hook-secret"})
	if r.Status != http.StatusOK {
		t.Fatalf("PUT /account: %s", r)
	}
	d := p.create(t, devToken, llmRequest("capped", "A100-80GB", 2, 4, 1, 1))
	p.waitDeploy(t, d.ID, 30*time.Second, "instance running", func(d deploy.View) bool { return d.Instances.Running == 1 })

	// 6 USD at 2 USD a second: reached 3 s after the GPUs were taken.
	var acct struct {
		Spent     float64 `json:"spent_this_month_usd"`
		Limit     float64 `json:"spending_limit_usd"`
		Blocked   bool    `json:"blocked"`
		ReachedAt *string `json:"limit_reached_at"`
	}
	if !waitFor(20*time.Second, 50*time.Millisecond, func() bool {
		p.do(t, http.MethodGet, "/account", devToken, nil).decode(t, &acct)
		return acct.Blocked
	}) {
		t.Fatalf("not blocked: %+v", acct)
	}
	blockedAt := time.Now()
	if acct.Spent < 6 || acct.Spent > 6+2*2 { // within 2 s of crossing, at 2 USD/s
		t.Errorf("blocked at %.2f USD spent of 6: enforcement came late", acct.Spent)
	}
	p.waitDeploy(t, d.ID, 10*time.Second, "drained to zero", func(d deploy.View) bool {
		return d.Instances.Running == 0 && d.Instances.Desired == 0
	})
	if !waitFor(5*time.Second, 20*time.Millisecond, func() bool { return len(simsUnder(p.PID())) == 0 }) {
		t.Fatal("a model server still runs after the limit was reached")
	}
	t.Logf("at zero %v after the block was seen", time.Since(blockedAt).Round(time.Millisecond))

	chat := map[string]any{"model": "dev/capped", "messages": []map[string]string{{"role": "user", "content": "hi"}}}
	r = p.do(t, http.MethodPost, "/v1/openai/chat/completions", devToken, chat)
	var e struct {
		Error struct{ Type, Code, Message string } `json:"error"`
	}
	r.decode(t, &e)
	if r.Status != http.StatusTooManyRequests || e.Error.Code != "insufficient_quota" || e.Error.Type != "insufficient_quota" {
		t.Errorf("request over the limit: %s, want 429 insufficient_quota", r)
	}
	r = p.do(t, http.MethodPut, "/deploy/"+d.ID, devToken, map[string]any{"settings": map[string]int{"min_instances": 1, "max_instances": 1}})
	if r.Status != http.StatusTooManyRequests {
		t.Errorf("min_instances 1 over the limit: %s, want 429", r)
	}
	if !waitFor(10*time.Second, 50*time.Millisecond, func() bool {
		th := hooks.Thresholds()
		return len(th) == 3
	}) || hooks.Bad() != 0 {
		t.Errorf("webhook: thresholds %v (want [50 80 100]), %d with a bad signature", hooks.Thresholds(), hooks.Bad())
	}
	if th := hooks.Thresholds(); len(th) == 3 && (th[0] != 50 || th[1] != 80 || th[2] != 100) {
		t.Errorf("webhook thresholds %v, want [50 80 100] in order", th)
	}

	r = p.do(t, http.MethodPut, "/account", devToken, map[string]any{"spending_limit_usd": 1000})
	if r.Status != http.StatusOK {
		t.Fatalf("raise the limit: %s", r)
	}
	if !waitFor(10*time.Second, 50*time.Millisecond, func() bool {
		return p.do(t, http.MethodPost, "/v1/openai/chat/completions", devToken, chat).Status == http.StatusOK
	}) {
		t.Error("a request after raising the limit was not served")
	}
}

// TestStartTimeout: a model server that never becomes ready within
// --start-timeout is stopped; after repeated timeouts the deployment is
// failed with the reason, and no model server is left holding GPUs.
func TestStartTimeout(t *testing.T) {
	t.Parallel()
	p := startThaw(t, thawOpts{SimStartup: time.Hour, Args: []string{"--start-timeout=1s"}})
	d := p.create(t, devToken, llmRequest("hung", "A100-80GB", 1, 4, 1, 1))
	got := p.waitDeploy(t, d.ID, 60*time.Second, "failed by the start timeout", func(d deploy.View) bool {
		return d.Status == deploy.StatusFailed
	})
	if !strings.Contains(got.FailReason, "start timeout") {
		t.Errorf("fail reason %q, want the start timeout named", got.FailReason)
	}
	if !waitFor(10*time.Second, 20*time.Millisecond, func() bool { return len(simsUnder(p.PID())) == 0 }) {
		t.Error("a model server still holds its GPUs after the deployment failed")
	}
}
