package localrt

import "strings"

// passedEnv are the variables of thaw's environment a model server gets;
// nothing else of it (thaw's own token in THAW_DEV_TOKEN, cloud
// credentials, ...) reaches a model server. Prefixes end in "_".
var passedEnv = []string{
	"PATH", "HOME", "USER", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
	// Weights cache and offline mode, as a node with a pre-seeded cache
	// runs (HF_TOKEN comes from the deployment, not from thaw's
	// environment).
	"HF_HOME", "HF_HUB_", "HF_ENDPOINT", "TRANSFORMERS_OFFLINE", "XDG_CACHE_HOME",
	// GPUs and the engine's own settings: vLLM's, torch's and its
	// libraries' (threads, allocator, collectives).
	"CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "CUDA_HOME", "VLLM_",
	"TORCH_", "TORCHINDUCTOR_", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NCCL_",
	"LD_LIBRARY_PATH", "LD_PRELOAD",
}

// modelServerEnv returns the environment of a model server: the passed
// subset of environ, then HF_TOKEN when the deployment has one.
func modelServerEnv(environ []string, hfToken string) []string {
	var out []string
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if k == "HF_TOKEN" || k == "HUGGING_FACE_HUB_TOKEN" {
			continue
		}
		for _, p := range passedEnv {
			if k == p || (strings.HasSuffix(p, "_") && strings.HasPrefix(k, p)) {
				out = append(out, kv)
				break
			}
		}
	}
	if hfToken != "" {
		out = append(out, "HF_TOKEN="+hfToken)
	}
	return out
}
