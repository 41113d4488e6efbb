package test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/thawhq/thaw/deploy"
)

// TestGPUQuota: with --gpu-quota 4, create and update are refused when a
// deployment can never fit, and under load a user never runs more than 4
// GPUs, with instances.reason naming the quota while it holds instances
// back.
func TestGPUQuota(t *testing.T) {
	p := startThaw(t, thawOpts{GPUQuota: 4, GPUs: "A100-80GB:8,H100-80GB:8"})
	bad := []int{http.StatusBadRequest, http.StatusUnprocessableEntity}

	r := p.do(t, http.MethodPost, "/deploy/llm", devToken, llmBody(uniqueName("q8"), "A100-80GB", 8, 8, 0, 1))
	checkError(t, "num_gpus 8 over quota 4", r, bad, "num_gpus")

	r = p.do(t, http.MethodPost, "/deploy/llm", devToken, llmBody(uniqueName("q3x2"), "A100-80GB", 2, 8, 3, 3))
	checkError(t, "min_instances 3 x num_gpus 2 over quota 4", r, bad, "")

	two := p.create(t, devToken, llmRequest(uniqueName("q2"), "A100-80GB", 2, 8, 0, 1))
	r = p.do(t, http.MethodPut, "/deploy/"+two.ID, devToken,
		map[string]any{"settings": map[string]any{"min_instances": 3, "max_instances": 3}})
	checkError(t, "PUT min_instances 3 x num_gpus 2 over quota 4", r, bad, "")
	if got := p.get(t, two.ID).Settings; got.MinInstances != 0 || got.MaxInstances != 1 {
		t.Errorf("refused PUT changed settings to %+v", got)
	}
	if err := p.api(devToken).Delete(context.Background(), two.ID); err != nil {
		t.Fatalf("DELETE: %v", err)
	}

	// One GPU per instance, one request per instance, up to 8 instances:
	// 48 requests of 200ms want 8 instances; the quota allows 4.
	name := uniqueName("qload")
	d := p.create(t, devToken, llmRequest(name, "A100-80GB", 1, 1, 0, 8))
	const n, maxTokens = 48, 40
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		failed []string
	)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := p.doCtx(context.Background(), http.MethodPost, "/v1/openai/chat/completions", devToken, chatBody("dev/"+name, maxTokens, false))
			msg := ""
			if err != nil {
				msg = err.Error()
			} else {
				msg = checkChat(r, maxTokens)
			}
			if msg != "" {
				mu.Lock()
				failed = append(failed, msg)
				mu.Unlock()
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	maxRunning, quotaReason, overQuota := 0, "", ""
	var last deploy.View
	for polling := true; polling; {
		select {
		case <-done:
			polling = false
		case <-time.After(50 * time.Millisecond):
		}
		got, err := p.api(devToken).Get(context.Background(), d.ID)
		if err != nil {
			t.Errorf("GET /deploy/%s during load: %v", d.ID, err)
			continue
		}
		last = got
		maxRunning = max(maxRunning, last.Instances.Running)
		if last.Instances.Running > 4 && overQuota == "" {
			overQuota = instancesOf(last)
		}
		if strings.Contains(strings.ToLower(last.Instances.Reason), "quota") {
			quotaReason = instancesOf(last)
		}
	}
	t.Logf("max running %d; held back by quota: %s", maxRunning, quotaReason)
	if len(failed) > 0 {
		t.Errorf("%d of %d requests failed, first: %s", len(failed), n, failed[0])
	}
	if overQuota != "" {
		t.Errorf("ran more than the 4-GPU quota: %s", overQuota)
	}
	if maxRunning != 4 {
		t.Errorf("under load wanting 8 instances, max running %d, want the quota's 4", maxRunning)
	}
	if quotaReason == "" {
		t.Errorf("instances.reason never mentioned the quota while it held the deployment at 4 of the 8 instances its load wants; last: %s", instancesOf(last))
	}
}

// TestShortfall: with one A100 in the inventory, a deployment wanting two
// runs one and shows the other pending with a reason naming the GPU type;
// deleting it stops its instance and frees the GPU for another deployment.
func TestShortfall(t *testing.T) {
	t.Parallel()
	p := startThaw(t, thawOpts{GPUs: "A100-80GB:1,H100-80GB:8", GPUQuota: 8})
	first := uniqueName("short")
	d := p.create(t, devToken, llmRequest(first, "A100-80GB", 1, 8, 2, 2))
	got := p.waitDeploy(t, d.ID, 15*time.Second, "running 1, pending 1", func(d deploy.View) bool {
		return d.Instances.Running == 1 && d.Instances.Pending == 1
	})
	if got.Instances.Desired != 2 {
		t.Errorf("desired %d, want 2: %s", got.Instances.Desired, instancesOf(got))
	}
	if !strings.Contains(got.Instances.Reason, "A100-80GB") {
		t.Errorf("reason does not name the GPU type A100-80GB: %s", instancesOf(got))
	}
	if msg := checkChat(p.chat(t, "dev/"+first, 4), 4); msg != "" {
		t.Errorf("the running instance does not serve: %s", msg)
	}

	if len(simsFor(first)) == 0 {
		t.Errorf("no simulator process found for %s while an instance runs; cannot check DELETE stops it", first)
	}
	r := p.do(t, http.MethodDelete, "/deploy/"+d.ID, devToken, nil)
	if r.Status != http.StatusOK && r.Status != http.StatusNoContent {
		t.Fatalf("DELETE /deploy/%s: %s", d.ID, r)
	}
	r = p.do(t, http.MethodGet, "/deploy/"+d.ID, devToken, nil)
	var gone deploy.View
	if r.Status == http.StatusOK {
		r.decode(t, &gone)
	}
	if r.Status != http.StatusNotFound && gone.Status != "deleted" {
		t.Errorf("GET after DELETE: want 404 or status deleted, got %s", r)
	}
	waitNoSims(t, "after DELETE", []string{first}, 10*time.Second)

	second := uniqueName("short2")
	d2 := p.create(t, devToken, llmRequest(second, "A100-80GB", 1, 8, 1, 1))
	p.waitDeploy(t, d2.ID, 15*time.Second, "running 1 on the freed A100", func(d deploy.View) bool {
		return d.Instances.Running == 1
	})
}
