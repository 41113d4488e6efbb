package envoy_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestActivatorReplicaKilledMidBurst: Envoy in front of thaw dev and two
// `thaw activator` replicas sharing a real Redis. A cold burst is held by
// both replicas; one is killed while they hold; Envoy retries what it held
// on the other, and every request is answered.
func TestActivatorReplicaKilledMidBurst(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	top := startTopology(t, ctx, topoOpts{simStartup: "3s", tokensPerSecond: "500"})
	e := top.edge
	a1, a2 := top.activators[0], top.activators[1]
	m1, m2 := top.metrics[1], top.metrics[2]
	act1 := top.actProcs[0]
	r := e.post(t, "/deploy/llm", "tok-dev", `{"model_name":"burst","gpu":"A100-80GB","num_gpus":1,"max_batch_size":8,`+
		`"hf":{"repo":"org/m"},"settings":{"min_instances":0,"max_instances":2}}`)
	if r.status != http.StatusOK {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	// The activators learn the deployment through Redis.
	e.waitFor(ctx, t, "activators to know the model", func() bool {
		for _, a := range []string{a1, a2} {
			req, _ := http.NewRequest(http.MethodGet, "http://"+a+"/v1/openai/models", nil)
			req.Header.Set("Authorization", "Bearer tok-dev")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return false
			}
			var m struct {
				Data []struct{ ID string } `json:"data"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&m)
			resp.Body.Close()
			if len(m.Data) != 1 || m.Data[0].ID != "dev/burst" {
				return false
			}
		}
		return true
	})

	const n = 60
	var wg sync.WaitGroup
	results := make([]reply, n)
	client := &http.Client{Timeout: time.Minute}
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.url+"/v1/openai/chat/completions", strings.NewReader(chat("dev/burst")))
			req.Header.Set("Authorization", "Bearer tok-dev")
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				results[i] = reply{status: -1, body: err.Error()}
				return
			}
			defer resp.Body.Close()
			var b strings.Builder
			_, _ = readAll(&b, resp)
			results[i] = reply{status: resp.StatusCode, body: b.String()}
		}()
	}
	// Both replicas hold part of the burst (3s simulator startup)...
	e.waitFor(ctx, t, "both activators to hold requests", func() bool {
		return held(t, m1) > 0 && held(t, m2) > 0
	})
	h1 := held(t, m1)
	// ...and one dies with its held requests.
	act1.Kill()
	wg.Wait()
	failed := 0
	for i, r := range results {
		if r.status != http.StatusOK {
			failed++
			if failed <= 3 {
				t.Errorf("request %d: %d %s", i, r.status, r.body)
			}
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d requests failed after an activator holding %d of them was killed", failed, n, h1)
	}
	t.Logf("killed an activator holding %d of %d requests; %d failed", h1, n, failed)
	checkNoEnvoyReject(t, e)
}

// held is the number of requests an activator holds, from /metrics on its
// operators' listener (metricsAddr).
func held(t *testing.T, metricsAddr string) int {
	t.Helper()
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, _ = readAll(&b, resp)
	total := 0
	for _, line := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(line, "thaw_requests_held{") {
			f := strings.Fields(line)
			var v float64
			_ = json.Unmarshal([]byte(f[len(f)-1]), &v)
			total += int(v)
		}
	}
	return total
}

func readAll(b *strings.Builder, resp *http.Response) (int64, error) { return io.Copy(b, resp.Body) }
