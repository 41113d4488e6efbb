package api

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/thawhq/thaw/deploy"
)

func TestCreate(t *testing.T) {
	h := newHarness(t, 4)
	v := h.create("alice", "test-model")
	want := deploy.View{
		ModelName: "test-model", FullName: "alice/test-model", Type: "llm", Status: deploy.StatusRunning,
		CreatedAt: clock0.Add(time.Second), UpdatedAt: clock0.Add(time.Second),
		Config: deploy.Config{GPU: "A100-80GB", NumGPUs: 1, MaxBatchSize: 8,
			Weights: deploy.Weights{Repo: "meta-llama/Llama-2-7b-chat-hf"}},
		Settings: deploy.Settings{MinInstances: 0, MaxInstances: 2},
	}
	if diff := cmp.Diff(want, v, cmpopts.IgnoreFields(deploy.View{}, "ID")); diff != "" {
		t.Errorf("created view (-want +got):\n%s", diff)
	}
	if !strings.HasPrefix(v.ID, "d-") {
		t.Errorf("deploy_id = %q, want an assigned ID", v.ID)
	}
	stored, err := h.store.Get(v.ID)
	if err != nil {
		t.Fatalf("not stored: %v", err)
	}
	if stored.Owner != "alice" || stored.HFToken != hfToken {
		t.Errorf("stored owner %q, token kept %v; want alice, true", stored.Owner, stored.HFToken == hfToken)
	}
	// The same name is free for another user.
	if got := h.create("bob", "test-model"); got.FullName != "bob/test-model" {
		t.Errorf("bob's full_name = %q", got.FullName)
	}
}

func TestCreateErrors(t *testing.T) {
	with := func(change func(map[string]any)) map[string]any {
		b := createBody("m")
		change(b)
		return b
	}
	tests := []struct {
		name string
		body any
		want apiError
	}{
		{name: "invalid JSON", body: `{"model_name":`, want: apiError{Status: 400, Type: "invalid_request_error", Code: "invalid_json"}},
		{name: "not an object", body: `[1,2]`, want: apiError{Status: 400, Type: "invalid_request_error", Code: "invalid_json"}},
		{name: "num_gpus a string", body: with(func(b map[string]any) { b["num_gpus"] = "1" }),
			want: apiError{Status: 400, Type: "invalid_request_error", Code: "invalid_type", Param: strp("num_gpus")}},
		{name: "hf.repo a number", body: with(func(b map[string]any) { b["hf"] = map[string]any{"repo": 5} }),
			want: apiError{Status: 400, Type: "invalid_request_error", Code: "invalid_type", Param: strp("hf.repo")}},
		{name: "settings.max_instances a float", body: with(func(b map[string]any) { b["settings"] = map[string]any{"max_instances": 1.5} }),
			want: apiError{Status: 400, Type: "invalid_request_error", Code: "invalid_type", Param: strp("settings.max_instances")}},
		{name: "extra_args a number", body: with(func(b map[string]any) { b["extra_args"] = 5 }),
			want: apiError{Status: 400, Type: "invalid_request_error", Code: "invalid_type", Param: strp("extra_args")}},
		{name: "empty body", body: ``, want: apiError{Status: 400, Type: "invalid_request_error", Code: "invalid_json"}},
		{name: "missing model_name", body: with(func(b map[string]any) { delete(b, "model_name") }),
			want: apiError{Status: 422, Type: "invalid_request_error", Code: "invalid_value", Param: strp("model_name")}},
		{name: "unknown gpu", body: with(func(b map[string]any) { b["gpu"] = "TPU" }),
			want: apiError{Status: 422, Type: "invalid_request_error", Code: "invalid_value", Param: strp("gpu")}},
		{name: "num_gpus 9", body: with(func(b map[string]any) { b["num_gpus"] = 9 }),
			want: apiError{Status: 422, Type: "invalid_request_error", Code: "invalid_value", Param: strp("num_gpus")}},
		{name: "max_batch_size 0", body: with(func(b map[string]any) { b["max_batch_size"] = 0 }),
			want: apiError{Status: 422, Type: "invalid_request_error", Code: "invalid_value", Param: strp("max_batch_size")}},
		{name: "no hf", body: with(func(b map[string]any) { delete(b, "hf") }),
			want: apiError{Status: 422, Type: "invalid_request_error", Code: "invalid_value", Param: strp("hf.repo")}},
		{name: "min over max", body: with(func(b map[string]any) { b["settings"] = map[string]any{"min_instances": 3, "max_instances": 2} }),
			want: apiError{Status: 422, Type: "invalid_request_error", Code: "invalid_value", Param: strp("settings.min_instances")}},
		{name: "num_gpus over quota", body: with(func(b map[string]any) { b["num_gpus"] = 5 }),
			want: apiError{Status: 422, Type: "invalid_request_error", Code: "quota_exceeded", Param: strp("num_gpus")}},
		{name: "min x gpus over quota", body: with(func(b map[string]any) {
			b["num_gpus"] = 2
			b["settings"] = map[string]any{"min_instances": 3, "max_instances": 3}
		}), want: apiError{Status: 422, Type: "invalid_request_error", Code: "quota_exceeded", Param: strp("settings.min_instances")}},
		{name: "body over 1 MiB", body: `{"model_name":"m","pad":"` + strings.Repeat("x", 1<<20) + `"}`,
			want: apiError{Status: 413, Type: "invalid_request_error", Code: "body_too_large"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, 4)
			got := h.do("alice", http.MethodPost, "/deploy/llm", tt.body).err(t)
			if diff := cmp.Diff(tt.want, got, cmpopts.IgnoreFields(apiError{}, "Message")); diff != "" {
				t.Errorf("error (-want +got):\n%s\nmessage: %s", diff, got.Message)
			}
			if tt.want.Param != nil && !strings.Contains(got.Message, strings.TrimPrefix(*tt.want.Param, "settings.")) {
				t.Errorf("message %q does not name %s", got.Message, *tt.want.Param)
			}
			if n := len(h.store.List("")); n != 0 {
				t.Errorf("a refused create stored %d deployments", n)
			}
		})
	}
}

func TestCreateDuplicate(t *testing.T) {
	h := newHarness(t, 4)
	h.create("alice", "m")
	got := h.do("alice", http.MethodPost, "/deploy/llm", createBody("m")).err(t)
	want := apiError{Status: 409, Type: "conflict_error", Code: "duplicate_model_name", Param: strp("model_name")}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(apiError{}, "Message")); diff != "" {
		t.Errorf("error (-want +got):\n%s", diff)
	}
}

func TestCreateQuotaSumsDeployments(t *testing.T) {
	h := newHarness(t, 4)
	b := createBody("a")
	b["num_gpus"] = 2
	b["settings"] = map[string]any{"min_instances": 1, "max_instances": 2}
	h.do("alice", http.MethodPost, "/deploy/llm", b).view(t)
	b["model_name"] = "b"
	h.do("alice", http.MethodPost, "/deploy/llm", b).view(t) // 2+2 = 4 fits
	b["model_name"] = "c"
	got := h.do("alice", http.MethodPost, "/deploy/llm", b).err(t)
	if got.Status != 422 || got.Code != "quota_exceeded" {
		t.Errorf("third deployment: %+v, want 422 quota_exceeded", got)
	}
	// bob's quota is his own.
	h.do("bob", http.MethodPost, "/deploy/llm", b).view(t)
	// quota 0 is off.
	off := newHarness(t, 0)
	b["num_gpus"] = 8
	b["settings"] = map[string]any{"min_instances": 10, "max_instances": 10}
	off.do("alice", http.MethodPost, "/deploy/llm", b).view(t)
}

func TestUnauthenticated(t *testing.T) {
	h := newHarness(t, 4)
	d := h.create("alice", "m")
	for _, r := range []struct{ method, path string }{
		{http.MethodPost, "/deploy/llm"}, {http.MethodGet, "/deploy/list"},
		{http.MethodGet, "/deploy/" + d.ID}, {http.MethodPut, "/deploy/" + d.ID}, {http.MethodDelete, "/deploy/" + d.ID},
	} {
		got := h.do("", r.method, r.path, createBody("x")).err(t)
		if got.Status != 401 || got.Type != "authentication_error" {
			t.Errorf("%s %s without a token: %+v, want 401", r.method, r.path, got)
		}
	}
	if _, err := h.store.Get(d.ID); err != nil {
		t.Errorf("unauthenticated DELETE removed the deployment: %v", err)
	}
}
