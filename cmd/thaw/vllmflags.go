package main

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/thawhq/thaw/jobs"
	"github.com/thawhq/thaw/localrt"
	"github.com/thawhq/thaw/vllm"
)

// deviceAuto is --vllm-device's value for "what this machine has"
// (thaw dev only: a Nomad job cannot see its node).
const deviceAuto = "auto"

// vllmFlags are the flags of the engines that run vLLM, shared by thaw dev
// and thaw server; each says what its binary and device defaults mean.
type vllmFlags struct {
	bin        string
	device     string
	kvCacheGiB int
	cacheDir   string
}

// register adds --vllm-bin, --vllm-device and --vllm-kv-cache-gib to fs.
func (f *vllmFlags) register(fs *flag.FlagSet, binUsage, deviceDefault, deviceUsage string) {
	fs.StringVar(&f.bin, "vllm-bin", "", binUsage)
	fs.StringVar(&f.device, "vllm-device", deviceDefault, deviceUsage)
	fs.IntVar(&f.kvCacheGiB, "vllm-kv-cache-gib", vllm.DefaultKVCacheGiB,
		"GiB of KV cache of each vLLM instance on CPUs (VLLM_CPU_KVCACHE_SPACE); unused on GPUs")
}

// cacheDirUsage describes --vllm-cache-dir; where says where it is.
const cacheDirUsage = "`directory`%s where every vLLM instance keeps its compile caches (VLLM_CACHE_ROOT, TORCHINDUCTOR_CACHE_DIR): only a model's first start compiles it, minutes on CPUs; %s"

// checkKVCache reports a --vllm-kv-cache-gib below 1.
func (f *vllmFlags) checkKVCache() error {
	if f.kvCacheGiB < 1 {
		return fmt.Errorf("--vllm-kv-cache-gib %d: want at least 1", f.kvCacheGiB)
	}
	return nil
}

// registerDev adds thaw dev's vLLM flags.
func (f *vllmFlags) registerDev(fs *flag.FlagSet) {
	f.register(fs, "`path` of the vllm executable, with --engine vllm (default: vllm next to the thaw executable, as make deps installs it in bin/, else vllm on PATH)",
		deviceAuto, "what vLLM computes on with --engine vllm: gpu, cpu (a CPU build of vLLM), or auto (gpu when /dev/nvidia0 exists)")
	fs.StringVar(&f.cacheDir, "vllm-cache-dir", "", fmt.Sprintf(cacheDirUsage, "", "default <data-dir>/vllm-cache"))
}

// localrt returns the runtime's engine settings for thaw dev's --engine
// (sim or vllm); exe is the thaw executable, next to which the vllm one is
// looked for.
func (f *vllmFlags) localrt(engine, exe, dataDir string) (localrt.Config, error) {
	switch localrt.Engine(engine) {
	case localrt.EngineSim:
		return localrt.Config{Engine: localrt.EngineSim}, nil
	case localrt.EngineVLLM:
	default:
		return localrt.Config{}, fmt.Errorf("--engine %q: want sim or vllm", engine)
	}
	bin, err := vllm.FindBinary(f.bin, exe)
	if err != nil {
		return localrt.Config{}, fmt.Errorf("--engine vllm: %w", err)
	}
	dev := vllm.Detect()
	if f.device != deviceAuto {
		if dev, err = vllm.ParseDevice(f.device); err != nil {
			return localrt.Config{}, fmt.Errorf("--vllm-device: %w", err)
		}
	}
	if err := f.checkKVCache(); err != nil {
		return localrt.Config{}, err
	}
	return localrt.Config{Engine: localrt.EngineVLLM, VLLMBinary: bin, VLLMDevice: dev, VLLMKVCacheGiB: f.kvCacheGiB,
		VLLMCacheDir: cmp.Or(f.cacheDir, filepath.Join(dataDir, "vllm-cache"))}, nil
}

// registerServer adds thaw server's vLLM flags and --hf-cache.
func (f *vllmFlags) registerServer(fs *flag.FlagSet, hfCache *string) {
	f.register(fs, "absolute `path` of the vllm executable on the Nomad clients, for --engine vllm-exec (overrides vllm_binary of "+jobsConfigFile+")",
		string(vllm.DeviceGPU), "what vLLM computes on: gpu, or cpu for clients without GPUs running a CPU build of vLLM (the jobs still ask for their GPU devices, for placement); overrides vllm_device of "+jobsConfigFile)
	fs.StringVar(&f.cacheDir, "vllm-cache-dir", "", fmt.Sprintf(cacheDirUsage, " on the Nomad clients (absolute)", "empty: each task's own, compiled at every start (overrides vllm_cache_dir of "+jobsConfigFile+")"))
	fs.StringVar(hfCache, "hf-cache", "", "absolute `path` of the Hugging Face cache on the Nomad clients: the vllm-exec task's HF_HOME, the docker task's mounted cache (overrides hf_cache_host_path of "+jobsConfigFile+")")
}

// applyServer lays the flags that set was given (by name) over the
// operator's job config, and checks that engine can run with the result.
func (f *vllmFlags) applyServer(jcfg *jobs.Config, set map[string]bool, hfCache string, engine jobs.Engine) error {
	if set["vllm-bin"] {
		jcfg.VLLMBinary = f.bin
	}
	if set["vllm-device"] {
		dev, err := vllm.ParseDevice(f.device)
		if err != nil {
			return fmt.Errorf("--vllm-device: %w", err)
		}
		jcfg.VLLMDevice = dev
	}
	if set["vllm-kv-cache-gib"] {
		if err := f.checkKVCache(); err != nil {
			return err
		}
		jcfg.VLLMKVCacheGiB = f.kvCacheGiB
	}
	if set["hf-cache"] {
		jcfg.HFCacheHostPath = hfCache
	}
	if set["vllm-cache-dir"] {
		jcfg.VLLMCacheDir = f.cacheDir
	}
	if engine == jobs.EngineVLLMExec && jcfg.VLLMBinary == "" {
		return errors.New("--engine vllm-exec needs --vllm-bin, the vllm executable's path on the Nomad clients (or vllm_binary in " + jobsConfigFile + ")")
	}
	return nil
}

// thawExecutable is the running thaw binary, "" when the OS cannot say.
func thawExecutable() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	return exe
}
