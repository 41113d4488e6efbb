package jobs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/thawhq/thaw/vllm"
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
	DefaultVLLMImage    = "vllm/vllm-openai:latest"
	DefaultVLLMCPU      = 4000  // MHz
	DefaultVLLMMemoryMB = 32768 // MiB
	DefaultShmSizeBytes = 8 << 30
	DefaultSimCPU       = 100 // MHz
	DefaultSimMemoryMB  = 128 // MiB
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
	// HFCacheHostPath, when set, is a host directory holding the Hugging
	// Face cache so restarts do not download the weights again: mounted as
	// the container's cache (EngineVLLM; the docker plugin must allow
	// volumes), or the task's HF_HOME (EngineVLLMExec).
	HFCacheHostPath string `json:"hf_cache_host_path,omitempty"`
	// VLLMCacheDir, when set, is a host directory where every vllm-exec
	// task of the client keeps vLLM's and torch's compile caches
	// (vllm.Settings.CacheDir), so only a model's first start on a node
	// compiles it. Empty: the task's own directory, compiled at each start.
	VLLMCacheDir string `json:"vllm_cache_dir,omitempty"`
	// VLLMBinary is the absolute path of the vllm executable on the Nomad
	// clients; required for EngineVLLMExec (thaw server --vllm-bin).
	VLLMBinary string `json:"vllm_binary,omitempty"`
	// VLLMDevice is what vLLM computes on, "gpu" or "cpu". A job cannot
	// see whether its node has GPUs, so the operator says: with "cpu"
	// (nodes without GPUs, a CPU build of vLLM) the task gets
	// VLLM_CPU_KVCACHE_SPACE and no --tensor-parallel-size; the job still
	// asks for num_gpus devices, so Nomad places it as it would the real
	// one. Default "gpu".
	VLLMDevice vllm.Device `json:"vllm_device,omitempty"`
	// VLLMKVCacheGiB is the KV cache of a vLLM instance on CPUs, in GiB.
	// Default vllm.DefaultKVCacheGiB.
	VLLMKVCacheGiB int `json:"vllm_cpu_kvcache_gib,omitempty"`
	// VLLMEnv is more environment of the vLLM task, e.g.
	// {"HF_HUB_OFFLINE": "1"} where the cache is seeded. It overrides
	// thaw's own settings of the same names; HF_TOKEN is refused (it comes
	// from the deployment's Nomad Variable).
	VLLMEnv map[string]string `json:"vllm_env,omitempty"`
	// SimCPU (MHz) and SimMemoryMB (MiB) are the simulator task's
	// resources. Defaults DefaultSimCPU, DefaultSimMemoryMB.
	SimCPU      int `json:"sim_cpu_mhz,omitempty"`
	SimMemoryMB int `json:"sim_memory_mb,omitempty"`
}

// removedFields are settings thaw no longer has, with what replaced them:
// LoadConfig says so rather than "unknown field".
var removedFields = map[string]string{
	"variable_prefix": "the HF token's Nomad Variable is nomad/jobs/<job id>, which the job's tasks read by their workload identity with no ACL policy; remove it (see the jobs package's doc)",
}

// LoadConfig reads a Config from a JSON file. Unknown fields are an error,
// so a typo does not silently fall back to a default.
func LoadConfig(path string) (Config, error) {
	var cfg Config
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("jobs: load config: %w", err)
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(b, &fields) == nil {
		for name, why := range removedFields {
			if _, ok := fields[name]; ok {
				return cfg, fmt.Errorf("jobs: load config %s: %s is no longer a setting: %s", path, name, why)
			}
		}
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
	cfg.VLLMEnv = maps.Clone(cfg.VLLMEnv)
	setDefault(&cfg.VLLMImage, DefaultVLLMImage)
	setDefault(&cfg.VLLMDevice, vllm.DeviceGPU)
	setDefault(&cfg.VLLMKVCacheGiB, vllm.DefaultKVCacheGiB)
	setDefault(&cfg.VLLMCPU, DefaultVLLMCPU)
	setDefault(&cfg.VLLMMemoryMB, DefaultVLLMMemoryMB)
	setDefault(&cfg.ShmSizeBytes, DefaultShmSizeBytes)
	setDefault(&cfg.SimCPU, DefaultSimCPU)
	setDefault(&cfg.SimMemoryMB, DefaultSimMemoryMB)
	return cfg
}

// check returns an error naming the first field of cfg (with defaults)
// that is out of range.
func (cfg Config) check() error {
	for _, n := range []struct {
		name string
		v    int64
	}{
		{"vllm_cpu_mhz", int64(cfg.VLLMCPU)}, {"vllm_memory_mb", int64(cfg.VLLMMemoryMB)},
		{"sim_cpu_mhz", int64(cfg.SimCPU)}, {"sim_memory_mb", int64(cfg.SimMemoryMB)},
		{"shm_size_bytes", cfg.ShmSizeBytes}, {"vllm_cpu_kvcache_gib", int64(cfg.VLLMKVCacheGiB)},
	} {
		if n.v < 0 {
			return fmt.Errorf("jobs: config %s = %d, must not be negative", n.name, n.v)
		}
	}
	if _, err := vllm.ParseDevice(string(cfg.VLLMDevice)); err != nil {
		return fmt.Errorf("jobs: config vllm_device: %w", err)
	}
	if cfg.VLLMBinary != "" && !filepath.IsAbs(cfg.VLLMBinary) {
		return fmt.Errorf("jobs: config vllm_binary %q must be an absolute path on the Nomad clients", cfg.VLLMBinary)
	}
	if cfg.HFCacheHostPath != "" && !filepath.IsAbs(cfg.HFCacheHostPath) {
		return fmt.Errorf("jobs: config hf_cache_host_path %q must be an absolute path", cfg.HFCacheHostPath)
	}
	for k := range cfg.VLLMEnv {
		if k == "" || strings.ContainsAny(k, "= ") || k == "HF_TOKEN" {
			return fmt.Errorf("jobs: config vllm_env: variable %q: want a name without '=' or spaces, not HF_TOKEN", k)
		}
	}
	return nil
}

func setDefault[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}
