package localrt

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/thawhq/thaw/fleet"
	"github.com/thawhq/thaw/vllm"
)

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
			"VLLM_CPU_KVCACHE_SPACE=3", "VLLM_CACHE_ROOT=/d/i1/vllm-cache",
			"TORCHINDUCTOR_CACHE_DIR=/d/i1/torchinductor", "TMPDIR=/d/i1",
		}},
		{"gpu", vllm.DeviceGPU, []string{
			"/opt/bin/vllm", "serve", "thaw-test/tiny-llama", "--served-model-name", "dev/tiny",
			"--max-num-seqs", "4", "--tensor-parallel-size", "1",
			"--host", "127.0.0.1", "--port", "20001", "--max-model-len", "256",
		}, []string{
			"VLLM_CACHE_ROOT=/d/i1/vllm-cache", "TORCHINDUCTOR_CACHE_DIR=/d/i1/torchinductor", "TMPDIR=/d/i1",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := vllmCommand("/opt/bin/vllm", vllm.Settings{Device: tc.dev, KVCacheGiB: 3})(spec, 20001, "/d/i1")
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
			for _, want := range []string{"HF_HOME=/cache/hf", "HF_HUB_OFFLINE=1"} {
				if !slices.Contains(cmd.Env, want) {
					t.Errorf("env lacks %s: %q", want, cmd.Env)
				}
			}
			for _, kv := range cmd.Env {
				if strings.HasPrefix(kv, "THAW_DEV_TOKEN=") || strings.HasPrefix(kv, "HF_TOKEN=") {
					t.Errorf("env has %s; the runtime adds the deployment's token itself", kv)
				}
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
