package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/thawhq/thaw/bench"
	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/test/e2e"
)

// vllmRepo is the test model `make deps` lays out in .cache/hf.
const vllmRepo = "thaw-test/tiny-llama"

// vllmSample is one cold start on real vLLM, seen from outside thaw.
type vllmSample struct {
	sent      time.Time // the request left the client
	started   time.Time // thaw logged "model server started": vLLM's process runs
	portOpen  time.Time // vLLM's port accepted a connection: it is loaded and serving
	firstByte time.Time // the first byte of the answer reached the client
}

// runColdVLLM performs n cold starts of the test model on real vLLM under
// thaw dev --engine vllm and returns the cold_start_vllm result.
func runColdVLLM(ctx context.Context, bin string, n int) bench.Result {
	r := bench.Result{
		Name:   "cold_start_vllm",
		Target: "p99 < 1 s over vLLM's own start",
		Method: fmt.Sprintf("%d cold starts of %s (the tiny random Llama make deps builds) on real vLLM (the CPU build "+
			"make deps installs), under thaw dev --engine vllm with a shared compile cache that one unmeasured start "+
			"fills first. Each: a new min_instances 0 deployment, one chat request of max_tokens 1, then the "+
			"deployment is deleted and its process waited out. vLLM's own time to ready is from its process start "+
			"(thaw's \"model server started\" log line) to its port accepting a connection (vLLM opens it once "+
			"loaded); overhead = first response byte at the client minus the request's send time minus that. It "+
			"includes waking the autoscaler, thaw's readiness probe, its one-token warm-up request, the dispatch and "+
			"vLLM generating the token. The simulator's figure is cold_start_overhead.", n, vllmRepo),
	}
	root, err := e2e.RepoRoot()
	if err != nil {
		return failed(r, err)
	}
	vllmBin, hf := filepath.Join(root, "bin", "vllm"), filepath.Join(root, ".cache", "hf")
	for _, p := range []string{vllmBin, hf} {
		if _, err := os.Stat(p); err != nil {
			return failed(r, fmt.Errorf("%w (make deps installs real vLLM and its test model)", err))
		}
	}
	dir, err := os.MkdirTemp("", "thawbench-vllm-")
	if err != nil {
		return failed(r, err)
	}
	p, err := launchThaw(bin, dir, []string{"dev", "--data-dir", dir, "--engine", "vllm", "--vllm-bin", vllmBin,
		"--vllm-cache-dir", filepath.Join(root, ".cache", "vllm-compiled"), "--idle-timeout", "30m", "--hold-timeout", "10m"},
		"HF_HOME="+hf, "HF_HUB_OFFLINE=1")
	if err != nil {
		return failed(r, err)
	}
	defer p.Stop()
	starts := p.WatchStarts()
	var samples []vllmSample
	for i := range n + 1 {
		s, err := coldStartVLLM(ctx, p, starts, fmt.Sprintf("vllm-%02d", i))
		if err != nil {
			return failed(r, fmt.Errorf("cold start %d: %w", i, err))
		}
		if i > 0 { // the first fills the compile cache
			samples = append(samples, s)
		}
	}
	var ttfb, ready, overhead []time.Duration
	for _, s := range samples {
		ttfb = append(ttfb, s.firstByte.Sub(s.sent))
		ready = append(ready, s.portOpen.Sub(s.started))
		overhead = append(overhead, s.firstByte.Sub(s.sent)-s.portOpen.Sub(s.started))
	}
	ov, rs, ts := bench.Summarize(overhead), bench.Summarize(ready), bench.Summarize(ttfb)
	r.Status, r.Met = bench.StatusOK, ov.P99Ms < 1000
	r.Headline = fmt.Sprintf("p50 %.0f ms, max %.0f ms over vLLM's own %.1f s (n=%d)", ov.P50Ms, ov.MaxMs, rs.P50Ms/1000, ov.N)
	r.Figures = map[string]any{"p50_ms": ov.P50Ms, "p99_ms": ov.P99Ms, "overhead": ov, "vllm_ready": rs, "first_byte": ts}
	return r
}

// coldStartVLLM creates a scale-to-zero deployment of the test model, sends
// it one request and watches its vLLM come up; then it deletes the
// deployment and waits until the vLLM has gone.
func coldStartVLLM(ctx context.Context, p *thawProc, starts <-chan serverStarted, name string) (s vllmSample, err error) {
	batch, gpus := 4, 1
	d, err := p.Create(ctx, deploy.CreateRequest{
		ModelName: name, GPU: "A100-80GB", NumGPUs: &gpus, MaxBatchSize: &batch,
		HF:       &deploy.HF{Repo: vllmRepo},
		Settings: &deploy.Settings{MinInstances: 0, MaxInstances: 1},
	})
	if err != nil {
		return s, err
	}
	var addr string
	defer func() {
		if rerr := p.remove(context.WithoutCancel(ctx), d.ID); rerr != nil && err == nil {
			err = fmt.Errorf("delete: %w", rerr)
		}
		// The next start must not share the CPUs with this one's exit.
		if addr != "" && !e2e.Eventually(60*time.Second, 100*time.Millisecond, func() bool { return !accepts(addr) }) && err == nil {
			err = fmt.Errorf("vLLM on %s still serving 60s after its deployment was deleted", addr)
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	client := &http.Client{}
	thaw := target{url: p.Base + "/v1/openai/chat/completions", auth: true, client: client}
	answer := make(chan outcome, 1)
	s.sent = time.Now()
	go func() { answer <- thaw.send(ctx, completionBody(d.FullName, 1)) }()
	for addr == "" {
		select {
		case ev := <-starts:
			if ev.Deploy == d.ID {
				addr, s.started = ev.Addr, ev.Seen
			}
		case <-ctx.Done():
			return s, fmt.Errorf("no vLLM started for %s; thaw dev's log:\n%s", d.ID, p.Tail())
		}
	}
	for !accepts(addr) {
		if ctx.Err() != nil {
			return s, fmt.Errorf("vLLM on %s never opened its port; thaw dev's log:\n%s", addr, p.Tail())
		}
		time.Sleep(2 * time.Millisecond)
	}
	s.portOpen = time.Now()
	o := <-answer
	if o.err != nil || o.status != http.StatusOK {
		return s, fmt.Errorf("cold request: status %d, %v; thaw dev's log:\n%s", o.status, o.err, p.Tail())
	}
	s.firstByte = o.firstByte
	return s, nil
}

// accepts says whether something accepts TCP connections on addr.
func accepts(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
