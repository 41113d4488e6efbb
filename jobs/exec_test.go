package jobs

import (
	"maps"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestJobVLLMExec: a vLLM installed on the client, on raw_exec: the
// arguments of the one definition (package vllm) with Nomad's address and
// port, the task's own directory for caches and temporary files, the HF
// cache as a path, and on CPU nodes the KV cache and no tensor parallelism,
// while the job still asks for its GPUs (placement is unchanged).
func TestJobVLLMExec(t *testing.T) {
	spec := Spec{
		DeployID: "d5", Owner: "alice", Model: "alice/llama", GPU: "A100-80GB", NumGPUs: 2,
		MaxBatchSize: 4, HFRepo: "thaw-test/tiny-llama", HFRevision: "main",
		ExtraArgs: []string{"--max-model-len", "256"}, Count: 1, Engine: EngineVLLMExec,
	}
	dirs := map[string]string{
		"VLLM_CACHE_ROOT":         "${NOMAD_TASK_DIR}/vllm-cache",
		"TORCHINDUCTOR_CACHE_DIR": "${NOMAD_TASK_DIR}/torchinductor",
		"TMPDIR":                  "${NOMAD_TASK_DIR}",
		"VLLM_RPC_BASE_PATH":      "/tmp",
	}
	with := func(m map[string]string, kv ...string) map[string]string {
		out := maps.Clone(m)
		for i := 0; i < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	tests := []struct {
		name     string
		cfg      Config
		wantArgs []string
		wantEnv  map[string]string
	}{
		{
			name: "gpu nodes, the clients' own HF cache",
			cfg:  Config{VLLMBinary: "/opt/vllm/bin/vllm"},
			wantArgs: []string{
				"serve", "thaw-test/tiny-llama", "--served-model-name", "alice/llama", "--max-num-seqs", "4",
				"--tensor-parallel-size", "2", "--revision", "main",
				"--host", "${NOMAD_IP_http}", "--port", "${NOMAD_PORT_http}", "--max-model-len", "256",
			},
			wantEnv: dirs,
		},
		{
			name: "cpu nodes, a seeded HF cache, offline",
			cfg: Config{
				VLLMBinary: "/opt/vllm/bin/vllm", VLLMDevice: "cpu", VLLMKVCacheGiB: 2,
				HFCacheHostPath: "/srv/hf", VLLMEnv: map[string]string{"HF_HUB_OFFLINE": "1"},
			},
			wantArgs: []string{
				"serve", "thaw-test/tiny-llama", "--served-model-name", "alice/llama", "--max-num-seqs", "4",
				"--revision", "main",
				"--host", "${NOMAD_IP_http}", "--port", "${NOMAD_PORT_http}", "--max-model-len", "256",
			},
			wantEnv: with(dirs, "VLLM_CPU_KVCACHE_SPACE", "2", "HF_HOME", "/srv/hf", "HF_HUB_OFFLINE", "1"),
		},
		{
			name: "cpu nodes, a shared compile cache",
			cfg:  Config{VLLMBinary: "/opt/vllm/bin/vllm", VLLMDevice: "cpu", VLLMCacheDir: "/var/cache/vllm"},
			wantArgs: []string{
				"serve", "thaw-test/tiny-llama", "--served-model-name", "alice/llama", "--max-num-seqs", "4",
				"--revision", "main",
				"--host", "${NOMAD_IP_http}", "--port", "${NOMAD_PORT_http}", "--max-model-len", "256",
			},
			wantEnv: with(dirs, "VLLM_CPU_KVCACHE_SPACE", "1",
				"VLLM_CACHE_ROOT", "/var/cache/vllm/vllm-cache", "TORCHINDUCTOR_CACHE_DIR", "/var/cache/vllm/torchinductor"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := rawExecView("d5", "vllm-exec", "A100-80GB", 1)
			want.Config = map[string]any{"command": "/opt/vllm/bin/vllm", "args": tt.wantArgs}
			want.Devices = wantDevices(2, "NVIDIA A100-SXM4-80GB")
			want.Templates = wantTokenTemplates("d5")
			want.Env = tt.wantEnv
			if diff := cmp.Diff(want, renderView(t, tt.cfg, spec)); diff != "" {
				t.Errorf("rendered job (-want +got):\n%s", diff)
			}
		})
	}
}

// TestJobVLLMOnCPUDocker: the docker task takes the same device choice.
func TestJobVLLMOnCPUDocker(t *testing.T) {
	r, err := New(Config{VLLMDevice: "cpu", VLLMImage: "example/vllm-cpu:1"})
	if err != nil {
		t.Fatal(err)
	}
	job, err := r.Job(Spec{DeployID: "d6", Owner: "alice", Model: "alice/m", GPU: "L4-24GB", NumGPUs: 1, MaxBatchSize: 2, HFRepo: "o/r"})
	if err != nil {
		t.Fatal(err)
	}
	task := job.TaskGroups[0].Tasks[0]
	wantArgs := []string{"serve", "o/r", "--served-model-name", "alice/m", "--max-num-seqs", "2", "--host", "0.0.0.0", "--port", "8000"}
	if diff := cmp.Diff(wantArgs, task.Config["args"]); diff != "" {
		t.Errorf("args (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"VLLM_CPU_KVCACHE_SPACE": "1"}, task.Env); diff != "" {
		t.Errorf("env (-want +got):\n%s", diff)
	}
}

func TestNewRejectsVLLMConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"unknown device", Config{VLLMDevice: "tpu"}},
		{"relative binary", Config{VLLMBinary: "bin/vllm"}},
		{"relative HF cache", Config{HFCacheHostPath: "cache/hf"}},
		{"negative KV cache", Config{VLLMKVCacheGiB: -1}},
		{"HF token in the env", Config{VLLMEnv: map[string]string{"HF_TOKEN": "x"}}},
		{"bad env name", Config{VLLMEnv: map[string]string{"A=B": "x"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if r, err := New(tc.cfg); err == nil || r != nil {
				t.Errorf("New = %v, %v; want an error", r, err)
			}
		})
	}
	if _, err := New(Config{}); err != nil {
		t.Fatalf("zero config rejected: %v", err)
	}
}
