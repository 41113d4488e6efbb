package e2e

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/thawhq/thaw/test/testnet"
)

// TinyModel is the Hugging Face repository id of the tiny random Llama
// that `make deps` lays out in the hub cache under HFHome: small enough
// for vLLM's CPU backend to load in seconds, and useless for anything but
// the API's shape (its output is gibberish).
const TinyModel = "thaw-test/tiny-llama"

// VLLMBin is bin/vllm of the repository (what `make deps` installs), or an
// error wrapping ErrMissing.
func VLLMBin() (string, error) { return RepoBin("vllm") }

// HFHome is the repository's Hugging Face home (.cache/hf), which holds
// the models `make deps` prepares for vLLM. It is an error wrapping
// ErrMissing when the directory is not there.
func HFHome() (string, error) { return repoPath(".cache", "hf") }

// HasModel reports, as an error wrapping ErrMissing, that the hub cache
// under home (an HF_HOME) lacks repo (owner/name); nil when vLLM can serve
// it offline.
func HasModel(home, repo string) error {
	dir := filepath.Join(home, "hub", "models--"+strings.ReplaceAll(repo, "/", "--"))
	if _, err := os.Stat(filepath.Join(dir, "refs", "main")); err != nil {
		return fmt.Errorf("%w: model %s in %s (run `make deps`): %v", ErrMissing, repo, home, err)
	}
	return nil
}

// VLLMConfig says how to start one real vLLM OpenAI-compatible server
// (`vllm serve`) on the CPU backend, offline. Zero values pick the defaults
// noted on each field.
type VLLMConfig struct {
	// Bin is the vllm command; default VLLMBin().
	Bin string
	// HFHome is HF_HOME, whose hub cache must hold Model (vLLM runs with
	// HF_HUB_OFFLINE=1); default HFHome().
	HFHome string
	// Model is the Hugging Face repository id to serve; default TinyModel.
	Model string
	// ServedName is --served-model-name, the name clients ask for;
	// default Model.
	ServedName string
	// MaxNumSeqs is --max-num-seqs; 0 leaves vLLM's default.
	MaxNumSeqs int
	// KVCacheGiB is VLLM_CPU_KVCACHE_SPACE, the KV cache in GiB; without
	// it vLLM tries to reserve most of the machine's memory. Default 1.
	KVCacheGiB int
	// Args are further `vllm serve` flags (e.g. --max-model-len 512).
	Args []string
	// Env is added to the environment StartVLLM sets (CleanEnv, HF_HOME,
	// HF_HUB_OFFLINE, VLLM_CPU_KVCACHE_SPACE, VLLM_CACHE_ROOT); a later
	// entry wins.
	Env []string
	// Proc are further process settings (Output, Keep, StopTimeout, ...);
	// its Args, Env, Name, Dir and Setpgid are set by StartVLLM.
	Proc ProcConfig
	// Ready is how long StartVLLM waits for GET /health to answer 200
	// (vLLM opens its port only once the weights are loaded: 25-45 s for
	// the tiny model); default 3 minutes.
	Ready time.Duration
}

// VLLM is one running vLLM server.
type VLLM struct {
	*Proc
	Base  string // http://127.0.0.1:port
	Model string // the served model name
	dir   string // the working directory; removed by Stop
}

// StartVLLM starts vLLM with cfg in a new, empty working directory (vLLM
// puts its working directory on a subprocess's sys.path) and a cache root
// of its own, and waits until GET /health is 200. On an error the process
// is stopped, and the error holds its output's tail. The error wraps
// ErrMissing when bin/vllm, the HF home or the model is not installed.
func StartVLLM(cfg VLLMConfig) (*VLLM, error) {
	if err := orFind(&cfg.Bin, VLLMBin); err != nil {
		return nil, err
	}
	if cfg.HFHome == "" {
		home, err := HFHome()
		if err != nil {
			return nil, err
		}
		cfg.HFHome = home
	}
	if cfg.Model == "" {
		cfg.Model = TinyModel
	}
	if err := HasModel(cfg.HFHome, cfg.Model); err != nil {
		return nil, err
	}
	if cfg.ServedName == "" {
		cfg.ServedName = cfg.Model
	}
	if cfg.KVCacheGiB == 0 {
		cfg.KVCacheGiB = 1
	}
	if cfg.Ready == 0 {
		cfg.Ready = 3 * time.Minute
	}
	addr, err := testnet.FreeAddr()
	if err != nil {
		return nil, err
	}
	host, port, _ := strings.Cut(addr, ":")
	dir, err := os.MkdirTemp("", "thaw-e2e-vllm-")
	if err != nil {
		return nil, err
	}
	cacheRoot := filepath.Join(dir, "cache")
	work := filepath.Join(dir, "work")
	for _, d := range []string{cacheRoot, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}

	args := []string{cfg.Bin, "serve", cfg.Model, "--served-model-name", cfg.ServedName,
		"--host", host, "--port", port}
	if cfg.MaxNumSeqs > 0 {
		args = append(args, "--max-num-seqs", strconv.Itoa(cfg.MaxNumSeqs))
	}
	pc := cfg.Proc
	pc.Name = "vllm " + addr
	pc.Args = append(args, cfg.Args...)
	pc.Env = append([]string{
		"HF_HOME=" + cfg.HFHome,
		"HF_HUB_OFFLINE=1",
		"VLLM_CPU_KVCACHE_SPACE=" + strconv.Itoa(cfg.KVCacheGiB),
		"VLLM_CACHE_ROOT=" + cacheRoot,
	}, cfg.Env...)
	pc.Dir = work
	// vLLM runs its engine in child processes: Stop signals the group.
	pc.Setpgid = true
	if pc.StopTimeout == 0 {
		pc.StopTimeout = 15 * time.Second
	}
	p, err := Start(pc)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	v := &VLLM{Proc: p, Base: "http://" + addr, Model: cfg.ServedName, dir: dir}
	if err := WaitHealthy(p, v.Base+"/health", cfg.Ready); err != nil {
		v.Stop()
		return nil, err
	}
	return v, nil
}

// Stop sends SIGTERM to the vLLM server, which stops its engine processes
// and exits (about 2 s), waits up to StopTimeout for it, then SIGKILLs its
// process group, leftovers included, and removes the working directory
// StartVLLM made. It reports whether the server exited by itself.
// (SIGTERM to the whole group is slower: the engine dies under the server,
// which then waits out its own timeouts.)
func (v *VLLM) Stop() bool {
	ok := v.Proc.Stop()
	// The group's id is still the engine processes' while any of them
	// lives, so this reaches no one else.
	if err := syscall.Kill(-v.PID(), syscall.SIGKILL); err == nil {
		ok = false // something outlived the server
	}
	if err := os.RemoveAll(v.dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		ok = false
	}
	return ok
}

// StartVLLMT is StartVLLM for a test: it fails t, or skips it outside CI
// when vLLM or the model is not installed (see Need), and registers a
// cleanup that stops the server and, if t failed, logs its output's tail.
func StartVLLMT(t testing.TB, cfg VLLMConfig) *VLLM {
	t.Helper()
	v, err := StartVLLM(cfg)
	Need(t, err)
	v.CleanupWith(t, v.Stop)
	return v
}
