package jobs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestGPUModels(t *testing.T) {
	tests := []struct {
		name      string
		overrides map[string]string
		want      map[string]string
	}{
		{
			name: "no overrides: the default table, no GPU type more or less",
			want: DefaultGPUModels,
		},
		{
			name: "override, add and remove",
			overrides: map[string]string{
				"A100-80GB":  "NVIDIA A100 80GB PCIe", // PCIe nodes
				"A10-24GB":   "NVIDIA A10",
				"B200-180GB": "",
			},
			want: map[string]string{
				"A100-80GB":  "NVIDIA A100 80GB PCIe",
				"A10-24GB":   "NVIDIA A10",
				"H100-80GB":  "NVIDIA H100 80GB HBM3",
				"L4-24GB":    "NVIDIA L4",
				"L40S-48GB":  "NVIDIA L40S",
				"H200-141GB": "NVIDIA H200",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := New(Config{GPUModels: tt.overrides})
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, g := range r.GPUTypes() {
				got[g], _ = r.GPUModel(g)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("GPU table (-want +got):\n%s", diff)
			}
		})
	}
	if DefaultGPUModels["B200-180GB"] != "NVIDIA B200" {
		t.Error("an override changed DefaultGPUModels")
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}

	got, err := LoadConfig(write("jobs.json", `{
		"gpu_models": {"H100-80GB": "NVIDIA H100 PCIe"},
		"vllm_image": "vllm/vllm-openai:v0.12.0",
		"datacenters": ["gpu-east"],
		"vllm_memory_mb": 65536
	}`))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		GPUModels:    map[string]string{"H100-80GB": "NVIDIA H100 PCIe"},
		VLLMImage:    "vllm/vllm-openai:v0.12.0",
		Datacenters:  []string{"gpu-east"},
		VLLMMemoryMB: 65536,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("LoadConfig (-want +got):\n%s", diff)
	}

	r, err := New(got)
	if err != nil {
		t.Fatal(err)
	}
	job, err := r.Job(Spec{
		DeployID: "d5", Owner: "alice", Model: "alice/m", GPU: "H100-80GB",
		NumGPUs: 1, MaxBatchSize: 1, HFRepo: "o/r",
	})
	if err != nil {
		t.Fatal(err)
	}
	task := job.TaskGroups[0].Tasks[0]
	if diff := cmp.Diff([]string{"gpu-east"}, job.Datacenters); diff != "" {
		t.Errorf("datacenters (-want +got):\n%s", diff)
	}
	if got := task.Resources.Devices[0].Constraints[0].RTarget; got != "NVIDIA H100 PCIe" {
		t.Errorf("device model = %q, want the override", got)
	}
	if got := *task.Resources.MemoryMB; got != 65536 {
		t.Errorf("memory = %d MiB, want 65536", got)
	}

	for name, body := range map[string]string{
		"typo.json":   `{"gpu_model": {}}`,
		"broken.json": `{"gpu_models": `,
	} {
		if _, err := LoadConfig(write(name, body)); err == nil {
			t.Errorf("LoadConfig(%s) succeeded, want an error", name)
		}
	}
	if _, err := LoadConfig(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("LoadConfig(missing) succeeded, want an error")
	}
	// A setting of an earlier version says what replaced it.
	_, err = LoadConfig(write("old.json", `{"variable_prefix": "ops/thaw"}`))
	if err == nil || !strings.Contains(err.Error(), "variable_prefix is no longer a setting") || !strings.Contains(err.Error(), "nomad/jobs/<job id>") {
		t.Errorf("LoadConfig(variable_prefix) = %v, want an error saying the token's Variable is nomad/jobs/<job id>", err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for name, cfg := range map[string]Config{
		"negative memory": {VLLMMemoryMB: -1},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%s) succeeded, want an error", name)
		}
	}
}
