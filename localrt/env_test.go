package localrt

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestModelServerEnv(t *testing.T) {
	environ := []string{
		"PATH=/usr/bin", "HOME=/root", "THAW_DEV_TOKEN=thaw_secret", "AWS_SECRET_ACCESS_KEY=x",
		"HF_HOME=/cache/hf", "HF_TOKEN=operators-token", "VLLM_CPU_KVCACHE_SPACE=1", "VLLMX=no",
		"REDIS_PASSWORD=x", "NOMAD_TOKEN=x", "HF_HUB_OFFLINE=1", "OMP_NUM_THREADS=4", "HUGGING_FACE_HUB_TOKEN=x",
	}
	for _, tc := range []struct {
		name, token string
		want        []string
	}{
		{"no token", "", []string{"PATH=/usr/bin", "HOME=/root", "HF_HOME=/cache/hf", "VLLM_CPU_KVCACHE_SPACE=1", "HF_HUB_OFFLINE=1", "OMP_NUM_THREADS=4"}},
		{"the deployment's token", "hf_dep", []string{"PATH=/usr/bin", "HOME=/root", "HF_HOME=/cache/hf", "VLLM_CPU_KVCACHE_SPACE=1", "HF_HUB_OFFLINE=1", "OMP_NUM_THREADS=4", "HF_TOKEN=hf_dep"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, modelServerEnv(environ, tc.token)); diff != "" {
				t.Errorf("model server environment (-want +got):\n%s", diff)
			}
		})
	}
}
