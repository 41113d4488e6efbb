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
	"HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "HF_ENDPOINT", "TRANSFORMERS_OFFLINE",
	// GPUs and the engine's own settings.
	"CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "VLLM_",
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
