package vllm

import (
	"fmt"
	"path/filepath"
	"strconv"
)

// DefaultKVCacheGiB is the KV cache of an instance on CPUs, in GiB
// (VLLM_CPU_KVCACHE_SPACE), when the caller sets none: enough for small
// models and a few sequences.
const DefaultKVCacheGiB = 1

// Device is what vLLM computes on.
type Device string

// Devices.
const (
	// DeviceGPU: the instance's GPUs, --tensor-parallel-size num_gpus.
	DeviceGPU Device = "gpu"
	// DeviceCPU: the machine's CPUs (a CPU build of vLLM), with
	// VLLM_CPU_KVCACHE_SPACE; num_gpus is ignored.
	DeviceCPU Device = "cpu"
)

// ParseDevice parses "gpu" or "cpu".
func ParseDevice(s string) (Device, error) {
	switch d := Device(s); d {
	case DeviceGPU, DeviceCPU:
		return d, nil
	}
	return "", fmt.Errorf("vllm: device %q, want %q or %q", s, DeviceGPU, DeviceCPU)
}

// Spec is a deployment as vLLM's command line needs it. The caller has
// validated it (the deploy API's rules): Repo and Model are not empty,
// MaxBatchSize is at least 1.
type Spec struct {
	// Repo and Revision locate the weights on Hugging Face; an empty
	// revision means the repository's default branch.
	Repo     string
	Revision string
	// Model is the name clients call, "<owner>/<model>":
	// --served-model-name.
	Model string
	// MaxBatchSize is --max-num-seqs.
	MaxBatchSize int
	// NumGPUs is --tensor-parallel-size on GPUs.
	NumGPUs int
	// ExtraArgs are appended as they are.
	ExtraArgs []string
}

// Args returns the arguments of the vllm executable (starting with "serve")
// that serve s on dev, listening on host:port.
func Args(s Spec, dev Device, host, port string) []string {
	args := []string{"serve", s.Repo,
		"--served-model-name", s.Model,
		"--max-num-seqs", strconv.Itoa(s.MaxBatchSize),
	}
	if dev != DeviceCPU && s.NumGPUs > 0 {
		args = append(args, "--tensor-parallel-size", strconv.Itoa(s.NumGPUs))
	}
	if s.Revision != "" {
		args = append(args, "--revision", s.Revision)
	}
	args = append(args, "--host", host, "--port", port)
	return append(args, s.ExtraArgs...)
}

// Settings are the engine's settings that do not come from the deployment.
type Settings struct {
	// Device is what vLLM computes on. Default DeviceGPU.
	Device Device
	// KVCacheGiB is the KV cache on CPUs, in GiB. Default
	// DefaultKVCacheGiB. Unused on GPUs (vLLM sizes it from
	// --gpu-memory-utilization).
	KVCacheGiB int
	// Dir is the instance's own directory, which exists: its temporary
	// files go in it, and its compile caches below it unless CacheDir is
	// set. Empty leaves them where vLLM puts them (a container's own
	// filesystem).
	Dir string
	// CacheDir, when set, holds vLLM's and torch's compile caches
	// (VLLM_CACHE_ROOT, TORCHINDUCTOR_CACHE_DIR) for every instance: they
	// are keyed by model and settings, so only the first start of a model
	// compiles it (minutes on CPUs) and every later one reuses the result.
	CacheDir string
}

// RPCBasePath is where vLLM's processes put their ZeroMQ sockets
// (VLLM_RPC_BASE_PATH; each named by a UUID). It stays short: a socket path
// is limited to 107 bytes, which a Nomad task directory with its UUIDs
// alone nearly fills.
const RPCBasePath = "/tmp"

// Env returns the KEY=VALUE settings of vLLM's environment for an instance,
// in a fixed order. Hugging Face's variables (HF_HOME, HF_HUB_OFFLINE,
// HF_TOKEN) are the caller's: they depend on where the process runs.
func Env(st Settings) []string {
	var env []string
	if st.Device == DeviceCPU {
		gib := st.KVCacheGiB
		if gib <= 0 {
			gib = DefaultKVCacheGiB
		}
		env = append(env, "VLLM_CPU_KVCACHE_SPACE="+strconv.Itoa(gib))
	}
	caches := st.CacheDir
	if caches == "" {
		caches = st.Dir
	}
	if caches != "" {
		env = append(env,
			"VLLM_CACHE_ROOT="+filepath.Join(caches, "vllm-cache"),
			"TORCHINDUCTOR_CACHE_DIR="+filepath.Join(caches, "torchinductor"),
		)
	}
	if st.Dir != "" {
		env = append(env, "TMPDIR="+st.Dir, "VLLM_RPC_BASE_PATH="+RPCBasePath)
	}
	return env
}
