package jobs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
)

// DefaultGPUModels maps thaw's GPU type names (what users pass as `gpu`) to
// the device model names the NVIDIA device plugin reports from NVML, which
// jobs match with `constraint { attribute = "${device.model}" }`. The SXM
// and PCIe variants of a card have different NVML names; operators whose
// nodes report another name override the entry (Config.GPUModels).
var DefaultGPUModels = map[string]string{
	"A100-80GB":  "NVIDIA A100-SXM4-80GB",
	"H100-80GB":  "NVIDIA H100 80GB HBM3",
	"L4-24GB":    "NVIDIA L4",
	"L40S-48GB":  "NVIDIA L40S",
	"H200-141GB": "NVIDIA H200",
	"B200-180GB": "NVIDIA B200",
}

// Defaults used when the corresponding Config field is zero.
const (
	DefaultVLLMImage      = "vllm/vllm-openai:latest"
	DefaultVariablePrefix = "thaw/deployments"
	DefaultVLLMCPU        = 4000  // MHz
	DefaultVLLMMemoryMB   = 32768 // MiB
	DefaultShmSizeBytes   = 8 << 30
	DefaultSimCPU         = 100 // MHz
	DefaultSimMemoryMB    = 128 // MiB
)

// Config holds the operator's choices for rendered jobs. The zero value is
// usable: every zero field means its default. It is loadable from JSON
// (LoadConfig), which is how operators override it (`--jobs-dir`).
type Config struct {
	// GPUModels overrides and extends DefaultGPUModels, entry by entry:
	// thaw GPU type -> NVIDIA device model name. An empty value removes
	// the type.
	GPUModels map[string]string `json:"gpu_models,omitempty"`
	// Datacenters the jobs may run in. Default: Nomad's ("*", all).
	Datacenters []string `json:"datacenters,omitempty"`
	// Namespace and Region of the jobs. Default: the client's.
	Namespace string `json:"namespace,omitempty"`
	Region    string `json:"region,omitempty"`
	// NodePool of the jobs. Default: Nomad's ("default").
	NodePool string `json:"node_pool,omitempty"`
	// VLLMImage is the docker image of the vLLM task. Default
	// DefaultVLLMImage; pin a version in production.
	VLLMImage string `json:"vllm_image,omitempty"`
	// VLLMCPU (MHz) and VLLMMemoryMB (MiB) are the vLLM task's resources.
	// Defaults DefaultVLLMCPU, DefaultVLLMMemoryMB.
	VLLMCPU      int `json:"vllm_cpu_mhz,omitempty"`
	VLLMMemoryMB int `json:"vllm_memory_mb,omitempty"`
	// ShmSizeBytes is the vLLM container's /dev/shm size (tensor-parallel
	// workers talk through it). Default DefaultShmSizeBytes.
	ShmSizeBytes int64 `json:"shm_size_bytes,omitempty"`
	// HFCacheHostPath, when set, is a host directory mounted as the
	// container's Hugging Face cache so restarts do not download the
	// weights again. The docker plugin must allow volumes.
	HFCacheHostPath string `json:"hf_cache_host_path,omitempty"`
	// VariablePrefix is where the per-deployment Nomad Variable holding the
	// HF token lives: <prefix>/<deploy id>. Default DefaultVariablePrefix.
	// With ACLs on, the jobs need a policy reading it (see doc.go).
	VariablePrefix string `json:"variable_prefix,omitempty"`
	// SimCPU (MHz) and SimMemoryMB (MiB) are the simulator task's
	// resources. Defaults DefaultSimCPU, DefaultSimMemoryMB.
	SimCPU      int `json:"sim_cpu_mhz,omitempty"`
	SimMemoryMB int `json:"sim_memory_mb,omitempty"`
}

// LoadConfig reads a Config from a JSON file. Unknown fields are an error,
// so a typo does not silently fall back to a default.
func LoadConfig(path string) (Config, error) {
	var cfg Config
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("jobs: load config: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return Config{}, fmt.Errorf("jobs: load config %s: %w", path, err)
	}
	return cfg, nil
}

// withDefaults returns cfg with zero fields filled in and GPUModels merged
// over DefaultGPUModels. It never aliases cfg's map.
func (cfg Config) withDefaults() Config {
	models := maps.Clone(DefaultGPUModels)
	for k, v := range cfg.GPUModels {
		if v == "" {
			delete(models, k)
			continue
		}
		models[k] = v
	}
	cfg.GPUModels = models
	cfg.Datacenters = slices.Clone(cfg.Datacenters)
	setDefault(&cfg.VLLMImage, DefaultVLLMImage)
	setDefault(&cfg.VariablePrefix, DefaultVariablePrefix)
	setDefault(&cfg.VLLMCPU, DefaultVLLMCPU)
	setDefault(&cfg.VLLMMemoryMB, DefaultVLLMMemoryMB)
	setDefault(&cfg.ShmSizeBytes, DefaultShmSizeBytes)
	setDefault(&cfg.SimCPU, DefaultSimCPU)
	setDefault(&cfg.SimMemoryMB, DefaultSimMemoryMB)
	return cfg
}

func setDefault[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}
