package test

import (
	"context"
	"net/http"
	"strings"
	"testing"
)

// withField returns a deploy body with key set to v (or removed when v is
// nil).
func withField(key string, v any) map[string]any {
	b := llmBody(uniqueName("bad"), "A100-80GB", 1, 8, 0, 1)
	if v == nil {
		delete(b, key)
	} else {
		b[key] = v
	}
	return b
}

func settings(minInst, maxInst any) map[string]any {
	return withField("settings", map[string]any{"min_instances": minInst, "max_instances": maxInst})
}

// TestBadInputs: invalid requests get 4xx in OpenAI's error shape naming
// the bad field, never a 5xx, and the process keeps serving.
func TestBadInputs(t *testing.T) {
	t.Parallel()
	p := startThaw(t, thawOpts{GPUQuota: 8})
	name := uniqueName("good")
	d := p.create(t, devToken, llmRequest(name, "A100-80GB", 1, 8, 0, 1))

	bad := []int{http.StatusBadRequest, http.StatusUnprocessableEntity}
	only400 := []int{http.StatusBadRequest}
	notFound := []int{http.StatusNotFound}
	huge := `{"model":"dev/` + name + `","messages":[{"role":"user","content":"` + strings.Repeat("a", 11<<20) + `"}]}`
	cases := []struct {
		what, method, path string
		body               any
		statuses           []int
		field              string
	}{
		{"invalid JSON", "POST", "/deploy/llm", `{"model_name": "x",`, only400, ""},
		{"missing model_name", "POST", "/deploy/llm", withField("model_name", nil), bad, "model_name"},
		{"empty model_name", "POST", "/deploy/llm", withField("model_name", ""), bad, "model_name"},
		{"unknown gpu", "POST", "/deploy/llm", withField("gpu", "Z80-1GB"), bad, "gpu"},
		{"num_gpus 0", "POST", "/deploy/llm", withField("num_gpus", 0), bad, "num_gpus"},
		{"num_gpus 9", "POST", "/deploy/llm", withField("num_gpus", 9), bad, "num_gpus"},
		{"num_gpus a string", "POST", "/deploy/llm", withField("num_gpus", "two"), bad, "num_gpus"},
		{"max_batch_size 0", "POST", "/deploy/llm", withField("max_batch_size", 0), bad, "max_batch_size"},
		{"max_batch_size 257", "POST", "/deploy/llm", withField("max_batch_size", 257), bad, "max_batch_size"},
		{"min_instances -1", "POST", "/deploy/llm", settings(-1, 1), bad, "min_instances"},
		{"min > max", "POST", "/deploy/llm", settings(2, 1), bad, ""},
		{"duplicate model_name", "POST", "/deploy/llm", llmBody(name, "A100-80GB", 1, 8, 0, 1), []int{http.StatusConflict}, ""},
		{"oversized create", "POST", "/deploy/llm", huge, []int{http.StatusRequestEntityTooLarge}, ""},
		{"GET unknown id", "GET", "/deploy/no-such-id", nil, notFound, ""},
		{"PUT unknown id", "PUT", "/deploy/no-such-id", map[string]any{"settings": map[string]any{"min_instances": 0, "max_instances": 1}}, notFound, ""},
		{"DELETE unknown id", "DELETE", "/deploy/no-such-id", nil, notFound, ""},
		{"PUT invalid JSON", "PUT", "/deploy/" + d.ID, `{"settings":`, only400, ""},
		{"PUT min > max", "PUT", "/deploy/" + d.ID, map[string]any{"settings": map[string]any{"min_instances": 3, "max_instances": 2}}, bad, ""},
		{"chat invalid JSON", "POST", "/v1/openai/chat/completions", `{"model":`, only400, ""},
		{"chat without model", "POST", "/v1/openai/chat/completions", map[string]any{"messages": []any{}}, bad, "model"},
		{"chat unknown model", "POST", "/v1/openai/chat/completions", chatBody("dev/no-such-model", 4, false), notFound, ""},
		{"chat unknown deploy_id", "POST", "/v1/openai/chat/completions", chatBody("deploy_id:no-such-id", 4, false), notFound, ""},
		{"completions unknown model", "POST", "/v1/openai/completions", map[string]any{"model": "dev/no-such-model", "prompt": "x"}, notFound, ""},
		{"chat oversized", "POST", "/v1/openai/chat/completions", huge, []int{http.StatusRequestEntityTooLarge}, ""},
		{"native unknown model", "POST", "/v1/inference/dev/no-such-model", map[string]any{"input": "hello"}, notFound, ""},
		{"native invalid JSON", "POST", "/v1/inference/dev/" + name, `{"input":`, only400, ""},
	}
	for _, c := range cases {
		r, err := p.doCtx(context.Background(), c.method, c.path, devToken, c.body)
		if err != nil {
			t.Errorf("%s: %s %s: transport error instead of an HTTP answer: %v", c.what, c.method, c.path, err)
			continue
		}
		param := checkError(t, c.what, r, c.statuses, c.field)
		if c.what == "missing model_name" && param != "model_name" {
			t.Errorf("missing model_name: error.param %q, want model_name: %s", param, r)
		}
		if strings.Contains(c.what, "min > max") {
			if !strings.Contains(string(r.Body), "min_instances") && !strings.Contains(string(r.Body), "max_instances") {
				t.Errorf("%s: error names neither min_instances nor max_instances: %s", c.what, r)
			}
		}
	}

	// PUT changes settings only: other fields are ignored or refused, never
	// applied.
	r := p.do(t, http.MethodPut, "/deploy/"+d.ID, devToken, map[string]any{
		"settings": map[string]any{"min_instances": 0, "max_instances": 3},
		"gpu":      "H100-80GB", "num_gpus": 2, "max_batch_size": 64,
	})
	got := p.get(t, d.ID)
	switch {
	case r.Status == http.StatusOK:
		if got.Settings.MaxInstances != 3 {
			t.Errorf("PUT answered 200 but settings are %+v, want max_instances 3", got.Settings)
		}
	case r.Status == http.StatusBadRequest || r.Status == http.StatusUnprocessableEntity:
		checkError(t, "PUT with config fields", r, bad, "")
		if got.Settings.MaxInstances != 1 {
			t.Errorf("refused PUT changed settings to %+v", got.Settings)
		}
	default:
		t.Errorf("PUT with config fields: %s, want 200 (fields ignored) or 400/422 (refused)", r)
	}
	if got.Config.GPU != "A100-80GB" || got.Config.NumGPUs != 1 || got.Config.MaxBatchSize != 8 {
		t.Errorf("PUT changed the config: %+v", got.Config)
	}
	r = p.do(t, http.MethodPut, "/deploy/"+d.ID, devToken, map[string]any{"settings": map[string]any{"min_instances": 0, "max_instances": 2}})
	if r.Status != http.StatusOK {
		t.Fatalf("PUT settings: %s", r)
	}
	if got := p.get(t, d.ID).Settings; got.MinInstances != 0 || got.MaxInstances != 2 {
		t.Errorf("PUT settings max_instances 2: settings now %+v", got)
	}

	// Still alive and serving.
	if r := p.do(t, http.MethodGet, "/healthz", "", nil); r.Status != http.StatusOK {
		t.Errorf("GET /healthz after bad inputs: %s", r)
	}
	if msg := checkChat(p.chat(t, "dev/"+name, 4), 4); msg != "" {
		t.Errorf("calling the deployment after bad inputs: %s", msg)
	}
}
