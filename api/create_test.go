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

// DeepInfra's documented curl bodies, pasted: a trailing comma in settings.
const (
	deepInfraCreate = `{
    "model_name": "test-model",
    "gpu": "A100-80GB",
    "num_gpus": 2,
    "max_batch_size": 64,
    "hf": {
        "repo": "meta-llama/Llama-2-7b-chat-hf",
        "token": "` + hfToken + `"
    },
    "settings": {
        "min_instances": 0,
        "max_instances": 1,
    }
}`
	deepInfraUpdate = `{
    "settings": {
        "min_instances": 1,
        "max_instances": 1,
    }
}`
)

func TestDeepInfraExamplesAsPasted(t *testing.T) {
	h := newHarness(t, 4)
	v := h.do("alice", http.MethodPost, "/deploy/llm", deepInfraCreate).view(t)
	want := deploy.View{
		ID: v.ID, ModelName: "test-model", FullName: "alice/test-model", Type: "llm", Status: deploy.StatusRunning,
		CreatedAt: clock0.Add(time.Second), UpdatedAt: clock0.Add(time.Second),
		Config: deploy.Config{GPU: "A100-80GB", NumGPUs: 2, MaxBatchSize: 64,
			Weights: deploy.Weights{Repo: "meta-llama/Llama-2-7b-chat-hf"}},
		Settings: deploy.Settings{MinInstances: 0, MaxInstances: 1},
	}
	if diff := cmp.Diff(want, v); diff != "" {
		t.Errorf("create (-want +got):\n%s", diff)
	}
	got := h.do("alice", http.MethodPut, "/deploy/"+v.ID, deepInfraUpdate).view(t)
	if diff := cmp.Diff(deploy.Settings{MinInstances: 1, MaxInstances: 1}, got.Settings); diff != "" {
		t.Errorf("update settings (-want +got):\n%s", diff)
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
			got := h.do("alice", http.MethodPost, "/deploy/llm", tt.body).wantErr(t, tt.want)
			if tt.want.Param != nil && !strings.Contains(got.Message, strings.TrimPrefix(*tt.want.Param, "settings.")) {
				t.Errorf("message %q does not name %s", got.Message, *tt.want.Param)
			}
			if n := len(h.store.List("")); n != 0 {
				t.Errorf("a refused create stored %d deployments", n)
			}
		})
	}
}

// TestBodyErrors checks the whole error a client sees for a body thaw
// cannot take: where it broke, or which field and what is allowed.
func TestBodyErrors(t *testing.T) {
	tests := []struct {
		name, method, body string
		want               apiError
	}{
		{"cut short", "POST", "{\n  \"model_name\": \"m\",\n  \"settings\": {\"max_instances\": 1",
			apiError{Status: 400, Type: "invalid_request_error", Code: "invalid_json",
				Message: "request body is not valid JSON: unexpected end at line 3, column 34: the object that starts at line 3, column 15 is not closed: expected more fields or '}'"}},
		{"a comma too many", "PUT", `{"settings": {"max_instances": 1,,}}`,
			apiError{Status: 400, Type: "invalid_request_error", Code: "invalid_json",
				Message: "request body is not valid JSON: line 1, column 34: invalid character ',' looking for beginning of object key string"}},
		{"invalid UTF-8", "POST", "{\"model_name\": \"\xc3\x28\"}",
			apiError{Status: 400, Type: "invalid_request_error", Code: "invalid_json",
				Message: "request body is not valid UTF-8: line 1, column 17 (byte 16)"}},
		{"unknown field", "POST", `{"model_name": "m", "settings": {"min_instance": 1}}`,
			apiError{Status: 400, Type: "invalid_request_error", Code: "unknown_field", Param: strp("settings.min_instance"),
				Message: `unknown field "settings.min_instance": settings takes min_instances, max_instances`}},
		{"repeated field", "PUT", `{"settings": {"max_instances": 1}, "settings": {"max_instances": 64}}`,
			apiError{Status: 400, Type: "invalid_request_error", Code: "repeated_field", Param: strp("settings"),
				Message: `field "settings" is given more than once: give it once`}},
		{"huge number", "POST", `{"model_name": "m", "num_gpus": 1e999}`,
			apiError{Status: 400, Type: "invalid_request_error", Code: "invalid_type", Param: strp("num_gpus"),
				Message: "num_gpus must be an integer (64-bit), got number 1e999"}},
		{"hf.revision Nomad would interpolate", "POST",
			`{"model_name": "m", "gpu": "A100-80GB", "hf": {"repo": "o/r", "revision": "${NOMAD_TOKEN}"}}`,
			apiError{Status: 400, Type: "invalid_request_error", Code: "invalid_value", Param: strp("hf.revision"),
				Message: `hf.revision "${NOMAD_TOKEN}" contains '$'; a revision is a branch, tag or commit of the repository (e.g. main, v1.0, refs/pr/1): ` +
					`up to 200 letters, digits, '.', '_', '-', '+' and '/', not starting with '-', '.' or '/', ` +
					`without ".." or "//", no part starting with '.' or ending in ".lock", not ending with '/' or '.'`}},
		{"hf.repo with ..", "POST",
			`{"model_name": "m", "gpu": "A100-80GB", "hf": {"repo": "o/../r"}}`,
			apiError{Status: 400, Type: "invalid_request_error", Code: "invalid_value", Param: strp("hf.repo"),
				Message: `hf.repo "o/../r" has more than one '/'; a Hugging Face repository is "owner/name" (or a bare "name"): ` +
					`1-96 letters, digits, '.', '_' or '-' in each part, starting and ending with a letter, digit or '_', ` +
					`without "--" or "..", not ending in ".git"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, 4)
			path := "/deploy/llm"
			if tt.method == "PUT" {
				path = "/deploy/" + h.create("alice", "existing").ID
			}
			got := h.do("alice", tt.method, path, tt.body).err(t)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			if tt.method == "POST" && len(h.store.List("")) != 0 {
				t.Error("a refused create stored a deployment")
			}
		})
	}
}

func TestMalformedNamesAre400(t *testing.T) {
	tests := []struct {
		name  string
		set   func(b map[string]any)
		param string
	}{
		{"model_name", func(b map[string]any) { b["model_name"] = "a/b" }, "model_name"},
		{"hf.repo", func(b map[string]any) { b["hf"] = map[string]any{"repo": "org/model.git"} }, "hf.repo"},
		{"hf.revision", func(b map[string]any) { b["hf"] = map[string]any{"repo": "o/r", "revision": `main"; rm -rf /`} }, "hf.revision"},
		{"hf.revision ..", func(b map[string]any) { b["hf"] = map[string]any{"repo": "o/r", "revision": "a/../../b"} }, "hf.revision"},
		{"hf.revision flag", func(b map[string]any) { b["hf"] = map[string]any{"repo": "o/r", "revision": "--trust-remote-code"} }, "hf.revision"},
		{"extra_args interpolation", func(b map[string]any) { b["extra_args"] = []string{"--x", "${attr.unique.hostname}"} }, "extra_args"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, 0)
			b := createBody("m")
			tt.set(b)
			got := h.do("alice", http.MethodPost, "/deploy/llm", b).wantErr(t,
				apiError{Status: 400, Type: "invalid_request_error", Code: "invalid_value", Param: strp(tt.param)})
			if !strings.HasPrefix(got.Message, tt.param) {
				t.Errorf("message %q does not start with %s", got.Message, tt.param)
			}
		})
	}
}

func TestCreateDuplicate(t *testing.T) {
	h := newHarness(t, 4)
	h.create("alice", "m")
	h.do("alice", http.MethodPost, "/deploy/llm", createBody("m")).wantErr(t, apiError{Status: 409, Type: "conflict_error", Code: "duplicate_model_name", Param: strp("model_name")})
}

func TestCreateDuplicateIgnoresCase(t *testing.T) {
	h := newHarness(t, 0)
	foo := h.create("alice", "foo")
	got := h.do("alice", http.MethodPost, "/deploy/llm", createBody("Foo")).err(t)
	want := apiError{Status: 409, Type: "conflict_error", Code: "duplicate_model_name", Param: strp("model_name"),
		Message: `you already have a deployment named "foo" (` + foo.ID + `); model names are unique regardless of case`}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("error (-want +got):\n%s", diff)
	}
	if got := names(t, h.do("alice", http.MethodGet, "/deploy/list", nil)); !cmp.Equal([]string{"alice/foo"}, got) {
		t.Errorf("list = %v, want only alice/foo", got)
	}
	// Another user's names do not count.
	if v := h.create("bob", "Foo"); v.FullName != "bob/Foo" {
		t.Errorf("bob's full_name = %q", v.FullName)
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
