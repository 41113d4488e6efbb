package vllmtest

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/thawhq/thaw/client"
	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/test/e2e"
)

// TestServerVLLMExec: the production topology (`make cluster`: Nomad with
// fake GPUs, thaw server, two activators, Envoy at the edge) with
// `--engine vllm-exec`: deployments become Nomad jobs running the vLLM
// installed on the node on raw_exec, on CPUs, loading the test model from
// the node's weights cache offline. The OpenAI Python SDK, through Envoy,
// wakes a cold deployment and streams from it.
func TestServerVLLMExec(t *testing.T) {
	e := needEngine(t)
	for _, bin := range []string{"nomad", "plugins/thaw-fakegpu", "envoy", "redis-server"} {
		if _, err := e2e.RepoBin(bin); err != nil {
			t.Fatalf("%v (make deps installs it)", err)
		}
	}
	dir := t.TempDir()
	// The operator's job settings: the weights cache is pre-seeded, so the
	// Hub is not asked (this machine has no route to it anyway); the tiny
	// model's vLLM fits in far less than the 32 GiB a real one is given.
	jobsDir := filepath.Join(dir, "jobs")
	if err := os.MkdirAll(jobsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	conf, _ := json.Marshal(map[string]any{
		"vllm_env": map[string]string{"HF_HUB_OFFLINE": "1"}, "vllm_memory_mb": 6144, "vllm_cpu_mhz": 1000,
	})
	if err := os.WriteFile(filepath.Join(jobsDir, "jobs.json"), conf, 0o644); err != nil {
		t.Fatal(err)
	}
	c := e2e.StartClusterT(t, e2e.ClusterConfig{
		Dir: filepath.Join(dir, "cluster"),
		Args: []string{"--engine", "vllm-exec", "--vllm-bin", e.vllm, "--vllm-device", "cpu", "--vllm-cache-dir", e.compiled,
			"--hf-cache", e.hfHome, "--jobs-dir", jobsDir, "--hold-timeout", "8m"},
	})
	api := &client.Client{BaseURL: c.Edge, Token: c.Token, HTTP: &http.Client{Timeout: 30 * time.Second}}
	batch, gpus := 4, 1
	d, err := api.Create(context.Background(), deploy.CreateRequest{
		ModelName: "tiny-nomad", GPU: "H100-80GB", NumGPUs: &gpus, MaxBatchSize: &batch,
		HF:       &deploy.HF{Repo: testRepo},
		Settings: &deploy.Settings{MinInstances: 0, MaxInstances: 1},
	})
	if err != nil {
		t.Fatalf("create through Envoy: %v", err)
	}
	r := runSDK(t, e, c.Edge+"/v1/openai", c.Token, d.FullName)
	checkSDK(t, r, d.FullName)
	if r.Chat.ColdStart == "" {
		t.Errorf("the first request has no X-Thaw-Cold-Start: it did not wake the deployment")
	}
	t.Logf("vllm-exec on Nomad through Envoy: first answer after %.1fs (X-Thaw-Cold-Start %s)", r.Chat.Seconds, r.Chat.ColdStart)
	if err := api.Delete(context.Background(), d.ID); err != nil {
		t.Errorf("delete: %v", err)
	}
}
