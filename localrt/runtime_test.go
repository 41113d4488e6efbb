package localrt

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/thawhq/thaw/fleet"
	"github.com/thawhq/thaw/vllm"
)

// ignoreAddr compares reports without their (random) Addr and the times
// their processes started and exited (TestHeldAndReleased checks them).
var ignoreAddr = cmpopts.IgnoreFields(fleet.Instance{}, "Addr", "Held", "Released")

func TestSimCommand(t *testing.T) {
	cmd := simCommand("/usr/bin/thaw", 3*time.Second, 50, nil)(fleet.Spec{Model: "alice/llama", MaxBatchSize: 96}, 40123, "/d/i1")
	want := []string{"/usr/bin/thaw", "sim", "--port", "40123", "--model", "alice/llama",
		"--startup", "3s", "--tokens-per-second", "50", "--max-num-seqs", "96"}
	if diff := cmp.Diff(want, cmd.Args); diff != "" {
		t.Errorf("args (-want +got):\n%s", diff)
	}
}

func TestVLLMCommand(t *testing.T) {
	t.Setenv("HF_HOME", "/cache/hf")
	t.Setenv("HF_HUB_OFFLINE", "1")
	t.Setenv("THAW_DEV_TOKEN", "thaw_secret")
	t.Setenv("TMPDIR", "/tmp")
	spec := fleet.Spec{
		DeployID: "d1", Model: "dev/tiny", Repo: "thaw-test/tiny-llama", MaxBatchSize: 4,
		NumGPUs: 1, ExtraArgs: []string{"--max-model-len", "256"}, HFToken: "hf_dep",
	}
	for _, tc := range []struct {
		name     string
		dev      vllm.Device
		wantArgs []string
		wantEnv  []string
	}{
		{"cpu", vllm.DeviceCPU, []string{
			"/opt/bin/vllm", "serve", "thaw-test/tiny-llama", "--served-model-name", "dev/tiny",
			"--max-num-seqs", "4", "--host", "127.0.0.1", "--port", "20001", "--max-model-len", "256",
		}, []string{
			"VLLM_CPU_KVCACHE_SPACE=3", "VLLM_CACHE_ROOT=/c/vllm-cache",
			"TORCHINDUCTOR_CACHE_DIR=/c/torchinductor", "TMPDIR=/d/i1", "VLLM_RPC_BASE_PATH=/tmp",
		}},
		{"gpu", vllm.DeviceGPU, []string{
			"/opt/bin/vllm", "serve", "thaw-test/tiny-llama", "--served-model-name", "dev/tiny",
			"--max-num-seqs", "4", "--tensor-parallel-size", "1",
			"--host", "127.0.0.1", "--port", "20001", "--max-model-len", "256",
		}, []string{
			"VLLM_CACHE_ROOT=/c/vllm-cache", "TORCHINDUCTOR_CACHE_DIR=/c/torchinductor", "TMPDIR=/d/i1", "VLLM_RPC_BASE_PATH=/tmp",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := vllmCommand("/opt/bin/vllm", vllm.Settings{Device: tc.dev, KVCacheGiB: 3, CacheDir: "/c"})(spec, 20001, "/d/i1")
			if diff := cmp.Diff(tc.wantArgs, cmd.Args); diff != "" {
				t.Errorf("args (-want +got):\n%s", diff)
			}
			// The last value of a key wins (exec.Cmd.Env): vLLM's settings
			// come last, after thaw's passed environment.
			n := len(tc.wantEnv)
			if len(cmd.Env) < n {
				t.Fatalf("env = %q, want it to end with %q", cmd.Env, tc.wantEnv)
			}
			if diff := cmp.Diff(tc.wantEnv, cmd.Env[len(cmd.Env)-n:]); diff != "" {
				t.Errorf("end of env (-want +got):\n%s", diff)
			}
			env := map[string]string{}
			for _, kv := range cmd.Env {
				k, v, _ := strings.Cut(kv, "=")
				env[k] = v
			}
			if env["HF_HOME"] != "/cache/hf" || env["HF_HUB_OFFLINE"] != "1" {
				t.Errorf("env lacks thaw's HF_HOME and HF_HUB_OFFLINE: %q", cmd.Env)
			}
			// The runtime adds the deployment's token itself.
			if _, ok := env["HF_TOKEN"]; ok || env["THAW_DEV_TOKEN"] != "" {
				t.Errorf("env has HF_TOKEN or thaw's token: %q", cmd.Env)
			}
		})
	}
}

func TestNewVLLMNeedsBinary(t *testing.T) {
	if _, err := New(Config{Engine: EngineVLLM}); err == nil {
		t.Error("New(engine vllm, no binary): no error")
	}
	if _, err := New(Config{Engine: "tgi"}); err == nil {
		t.Error("New(engine tgi): no error")
	}
	if _, err := New(Config{Engine: EngineVLLM, VLLMBinary: "/bin/true", VLLMDevice: "tpu"}); err == nil {
		t.Error("New(device tpu): no error")
	}
}

func TestStartRunsInstance(t *testing.T) {
	h := start(t, Config{Inventory: map[string]int{"A100-80GB": 8}})
	id := h.startInst(fleet.Spec{DeployID: "d1", Model: "listen", GPU: "A100-80GB", NumGPUs: 2})
	ev := h.waitFor(id, fleet.PhaseRunning)
	if !strings.HasPrefix(ev.Addr, "127.0.0.1:") || ev.DeployID != "d1" {
		t.Errorf("running report = %+v, want DeployID d1 and Addr 127.0.0.1:port", ev)
	}
	dial(t, ev.Addr)
	want := map[string]GPUCount{"A100-80GB": {Free: 6, Total: 8}}
	if diff := cmp.Diff(want, h.rt.GPUs()); diff != "" {
		t.Errorf("GPUs (-want +got):\n%s", diff)
	}
	// The child's stdout is logged at debug level.
	eventually(t, 5*time.Second, func() bool { return strings.Contains(h.logs.String(), "listening on 127.0.0.1") },
		func() string { return "child's stdout not logged; logs:\n" + h.logs.String() })
}

func TestHFTokenReachesChildOnly(t *testing.T) {
	h := start(t, Config{Inventory: map[string]int{"A100-80GB": 1}})
	// The helper fails unless HF_TOKEN is hf_secret_123 (WANT_TOKEN).
	id := h.startInst(fleet.Spec{Model: "token", GPU: "A100-80GB", NumGPUs: 1, HFToken: "hf_secret_123"})
	dial(t, h.waitFor(id, fleet.PhaseRunning).Addr)
	if err := h.rt.Stop(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	h.waitFor(id, fleet.PhaseStopped)
	if strings.Contains(h.logs.String(), "hf_secret_123") {
		t.Errorf("the HF token was logged:\n%s", h.logs)
	}
}

func TestPendingPlacedAfterStop(t *testing.T) {
	h := start(t, Config{Inventory: map[string]int{"A100-80GB": 2}})
	a := h.startInst(fleet.Spec{Model: "listen", GPU: "A100-80GB", NumGPUs: 2})
	h.waitFor(a, fleet.PhaseRunning)
	b := h.startInst(fleet.Spec{Model: "listen", GPU: "A100-80GB", NumGPUs: 1})
	c := h.startInst(fleet.Spec{Model: "listen", GPU: "A100-80GB", NumGPUs: 1})
	x := h.startInst(fleet.Spec{Model: "listen", GPU: "H200-141GB", NumGPUs: 1})
	h.waitFor(x, fleet.PhasePending)

	if err := h.rt.Stop(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	h.waitFor(b, fleet.PhaseRunning)
	h.waitFor(c, fleet.PhaseRunning)
	want := map[string][]fleet.Instance{
		a: {{ID: a, Phase: fleet.PhaseRunning}, {ID: a, Phase: fleet.PhaseStopped}},
		b: {
			{ID: b, Phase: fleet.PhasePending, Reason: "no free A100-80GB GPU: needs 1, 0 of 2 free"},
			{ID: b, Phase: fleet.PhaseRunning},
		},
		c: {
			{ID: c, Phase: fleet.PhasePending, Reason: "no free A100-80GB GPU: needs 1, 0 of 2 free"},
			{ID: c, Phase: fleet.PhaseRunning},
		},
		x: {{ID: x, Phase: fleet.PhasePending, Reason: "no H200-141GB GPUs in this cluster's inventory"}},
	}
	got := map[string][]fleet.Instance{a: h.of(a), b: h.of(b), c: h.of(c), x: h.of(x)}
	if diff := cmp.Diff(want, got, ignoreAddr); diff != "" {
		t.Errorf("reports (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]GPUCount{"A100-80GB": {Free: 0, Total: 2}}, h.rt.GPUs()); diff != "" {
		t.Errorf("GPUs (-want +got):\n%s", diff)
	}

	// Stopping a pending instance drops it at once.
	if err := h.rt.Stop(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	h.waitFor(x, fleet.PhaseStopped)
}

func TestExitReportsFailed(t *testing.T) {
	h := start(t, Config{Inventory: map[string]int{"A100-80GB": 1}})
	a := h.startInst(fleet.Spec{Model: "fail", GPU: "A100-80GB", NumGPUs: 1})
	b := h.startInst(fleet.Spec{Model: "listen", GPU: "A100-80GB", NumGPUs: 1})
	failed := h.waitFor(a, fleet.PhaseFailed)
	if want := "model server exited: exit status 1: boom: out of memory"; failed.Reason != want {
		t.Errorf("failure reason = %q, want %q", failed.Reason, want)
	}
	// a's GPU went to b.
	dial(t, h.waitFor(b, fleet.PhaseRunning).Addr)
	if got := h.of(a); len(got) != 2 || got[0].Phase != fleet.PhaseRunning {
		t.Errorf("reports of a = %+v, want running then failed", got)
	}
}

// startFailing starts a runtime with one A100 and a model server command
// that cannot start, and one instance on it; it returns the instance and
// its failed report.
func startFailing(t *testing.T) (h *harness, id string, failed fleet.Instance) {
	t.Helper()
	h = start(t, Config{
		Inventory: map[string]int{"A100-80GB": 1},
		Command:   simCommand("/nonexistent/thaw", time.Second, 50, nil),
	})
	id = h.startInst(fleet.Spec{Model: "m", GPU: "A100-80GB", NumGPUs: 1})
	return h, id, h.waitFor(id, fleet.PhaseFailed)
}

func TestStartFailure(t *testing.T) {
	h, _, ev := startFailing(t)
	if !strings.HasPrefix(ev.Reason, "could not start model server: ") {
		t.Errorf("reason = %q, want could not start model server: ...", ev.Reason)
	}
	if got := h.rt.GPUs()["A100-80GB"]; got.Free != 1 {
		t.Errorf("free GPUs after a failed start = %d, want 1", got.Free)
	}
}

func TestStopKillsProcess(t *testing.T) {
	for _, tc := range []struct {
		model   string
		minTime time.Duration // how long Stop must take at least
	}{
		{model: "listen"},
		{model: "ignore-term", minTime: 500 * time.Millisecond},
	} {
		t.Run(tc.model, func(t *testing.T) {
			h := start(t, Config{Inventory: map[string]int{"A100-80GB": 1}, StopGrace: 500 * time.Millisecond})
			id := h.startInst(fleet.Spec{Model: tc.model, GPU: "A100-80GB", NumGPUs: 1})
			dial(t, h.waitFor(id, fleet.PhaseRunning).Addr)
			pid := h.pid(id)
			begin := time.Now()
			if err := h.rt.Stop(context.Background(), id); err != nil {
				t.Fatal(err)
			}
			if took := time.Since(begin); took < tc.minTime {
				t.Errorf("Stop took %v, want >= %v (SIGKILL only after StopGrace)", took, tc.minTime)
			}
			if alive(pid) {
				t.Errorf("process %d still runs after Stop returned", pid)
			}
			if got := h.rt.GPUs()["A100-80GB"]; got.Free != 1 {
				t.Errorf("free GPUs after Stop = %d, want 1", got.Free)
			}
			h.waitFor(id, fleet.PhaseStopped)
			// Idempotent.
			if err := h.rt.Stop(context.Background(), id); err != nil {
				t.Errorf("second Stop: %v", err)
			}
			if err := h.rt.Stop(context.Background(), "unknown"); err != nil {
				t.Errorf("Stop(unknown): %v", err)
			}
		})
	}
}

func TestRunCancelStopsAll(t *testing.T) {
	dir := t.TempDir()
	h := start(t, Config{Inventory: map[string]int{"A100-80GB": 2}, StateDir: dir, StopGrace: 500 * time.Millisecond})
	var ids []string
	for _, model := range []string{"listen", "ignore-term", "listen"} {
		ids = append(ids, h.startInst(fleet.Spec{Model: model, GPU: "A100-80GB", NumGPUs: 1}))
	}
	// Listening: the second one now ignores SIGTERM and needs SIGKILL.
	dial(t, h.waitFor(ids[0], fleet.PhaseRunning).Addr)
	dial(t, h.waitFor(ids[1], fleet.PhaseRunning).Addr)
	h.waitFor(ids[2], fleet.PhasePending)
	pids := []int{h.pid(ids[0]), h.pid(ids[1])}
	st, err := readState(dir + "/" + stateFileName)
	if err != nil || len(st.Children) != 2 {
		t.Errorf("state file: %d records, err %v; want 2", len(st.Children), err)
	}

	begin := time.Now()
	h.stop()
	if took := time.Since(begin); took < 500*time.Millisecond {
		t.Errorf("Run returned %v after cancel, want >= StopGrace (a child ignores SIGTERM)", took)
	}
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("process %d still runs after Run returned", pid)
		}
	}
	for _, id := range ids {
		h.waitFor(id, fleet.PhaseStopped)
	}
	if st, err := readState(dir + "/" + stateFileName); err != nil || len(st.Children) != 0 {
		t.Errorf("state file after Run: %+v, %v; want no child", st, err)
	}
	if es, err := readEnded(dir + "/" + endedFileName); err != nil || len(es) != 2 {
		t.Errorf("ended file after Run: %+v, %v; want the two that ran", es, err)
	}
	if _, err := h.rt.Start(context.Background(), fleet.Spec{}); err != ErrClosed {
		t.Errorf("Start after Run = %v, want ErrClosed", err)
	}
}

// TestConcurrentStartStop stops instances concurrently in every stage: half
// at once (pending, or placed and starting), half once they run (waiting for
// the report rather than for a fixed time).
func TestConcurrentStartStop(t *testing.T) {
	h := start(t, Config{Inventory: map[string]int{"A100-80GB": 3}, StopGrace: time.Second})
	var wg sync.WaitGroup
	for i := range 12 {
		wg.Go(func() {
			id := h.startInst(fleet.Spec{Model: "listen", GPU: "A100-80GB", NumGPUs: 1 + i%2})
			if i%4 >= 2 {
				h.waitFor(id, fleet.PhaseRunning)
			}
			if err := h.rt.Stop(context.Background(), id); err != nil {
				t.Errorf("Stop: %v", err)
			}
		})
	}
	wg.Wait()
	if diff := cmp.Diff(map[string]GPUCount{"A100-80GB": {Free: 3, Total: 3}}, h.rt.GPUs()); diff != "" {
		t.Errorf("GPUs after all stopped (-want +got):\n%s", diff)
	}
	h.rt.mu.Lock()
	n, p := len(h.rt.insts), len(h.rt.ports)
	h.rt.mu.Unlock()
	if n != 0 || p != 0 {
		t.Errorf("%d instances and %d ports left, want none", n, p)
	}
}

func TestStopPendingBeforeRun(t *testing.T) {
	rt, err := New(Config{
		Inventory: map[string]int{"A100-80GB": 1},
		Command:   helperCommand,
		Logger:    slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	// Placed but not started (Run is not running): Stop must not wait for it.
	id, err := rt.Start(context.Background(), fleet.Spec{Model: "listen", GPU: "A100-80GB", NumGPUs: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rt.Stop(ctx, id); err != nil {
		t.Fatal(err)
	}
	got := queued(rt.events)
	if diff := cmp.Diff([]fleet.Instance{{ID: id, Phase: fleet.PhaseStopped}}, got); diff != "" {
		t.Errorf("queued reports (-want +got):\n%s", diff)
	}
	if got := rt.GPUs()["A100-80GB"].Free; got != 1 {
		t.Errorf("free GPUs = %d, want 1", got)
	}
}

// queued takes the reports queued so far, with no pump running.
func queued(e *fleet.EventQueue) []fleet.Instance {
	e.Flush()
	var out []fleet.Instance
	for {
		select {
		case ev := <-e.Events():
			out = append(out, ev)
		default:
			return out
		}
	}
}
