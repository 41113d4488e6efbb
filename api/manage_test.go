package api

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/deploy"
)

func names(t *testing.T, r response) []string {
	t.Helper()
	out := []string{}
	for _, v := range decodeOK[[]deploy.View](t, r) {
		out = append(out, v.FullName)
	}
	return out
}

func TestList(t *testing.T) {
	h := newHarness(t, 0)
	a := h.create("alice", "a")
	b := h.create("alice", "b")
	h.create("bob", "c")
	h.live.set(b.ID, deploy.Live{Status: deploy.StatusFailed, FailReason: "crash loop"})
	_ = a

	tests := []struct {
		user, query string
		want        []string
	}{
		{"alice", "", []string{"alice/a", "alice/b"}},
		{"bob", "", []string{"bob/c"}},
		{"alice", "?status=running", []string{"alice/a"}},
		{"alice", "?status=failed", []string{"alice/b"}},
		{"alice", "?status=stopped", []string{}},
		{"bob", "?status=failed", []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.user+tt.query, func(t *testing.T) {
			got := names(t, h.do(tt.user, http.MethodGet, "/deploy/list"+tt.query, nil))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("list (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("empty list is an array", func(t *testing.T) {
		e := newHarness(t, 0)
		r := e.do("alice", http.MethodGet, "/deploy/list", nil)
		if got := strings.TrimSpace(string(r.body)); got != "[]" {
			t.Errorf("body = %s, want []", got)
		}
	})
	t.Run("bad status", func(t *testing.T) {
		h.do("alice", http.MethodGet, "/deploy/list?status=bogus", nil).wantErr(t, apiError{Status: 400, Type: "invalid_request_error", Code: "invalid_status", Param: strp("status")})
	})
}

func TestGet(t *testing.T) {
	h := newHarness(t, 0)
	d := h.create("alice", "m")
	h.live.set(d.ID, deploy.Live{Status: deploy.StatusDeploying,
		Instances: deploy.Instances{Running: 0, Pending: 1, Desired: 1, Reason: "1 instance(s) starting"}})
	got := h.do("alice", http.MethodGet, "/deploy/"+d.ID, nil).view(t)
	want := d
	want.Status = deploy.StatusDeploying
	want.Instances = deploy.Instances{Pending: 1, Desired: 1, Reason: "1 instance(s) starting"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("get (-want +got):\n%s", diff)
	}
	// The instances object carries running and pending even when zero.
	r := h.do("alice", http.MethodGet, "/deploy/"+d.ID, nil)
	var raw struct {
		Instances map[string]any `json:"instances"`
	}
	if err := json.Unmarshal(r.body, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"running", "pending", "desired", "reason"} {
		if _, ok := raw.Instances[k]; !ok {
			t.Errorf("instances lacks %q: %s", k, r.body)
		}
	}
}

func TestOtherUsersDeploymentIsNotFound(t *testing.T) {
	h := newHarness(t, 0)
	d := h.create("alice", "m")
	tests := []struct {
		method, path string
		body         any
	}{
		{http.MethodGet, "/deploy/" + d.ID, nil},
		{http.MethodPut, "/deploy/" + d.ID, map[string]any{"settings": map[string]any{"min_instances": 0, "max_instances": 5}}},
		{http.MethodDelete, "/deploy/" + d.ID, nil},
		{http.MethodGet, "/deploy/d-doesnotexist", nil},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			h.do("bob", tt.method, tt.path, tt.body).wantErr(t, apiError{Status: 404, Type: "not_found_error", Code: "deployment_not_found", Param: strp("deploy_id")})
		})
	}
	after := h.do("alice", http.MethodGet, "/deploy/"+d.ID, nil).view(t)
	if diff := cmp.Diff(d, after); diff != "" {
		t.Errorf("bob's requests changed alice's deployment (-want +got):\n%s", diff)
	}
}

func TestUpdate(t *testing.T) {
	h := newHarness(t, 4)
	d := h.create("alice", "m")
	body := map[string]any{
		"settings":   map[string]any{"min_instances": 1, "max_instances": 4},
		"model_name": "renamed", "gpu": "H100-80GB", "num_gpus": 2, // ignored: settings only
	}
	got := h.do("alice", http.MethodPut, "/deploy/"+d.ID, body).view(t)
	want := d
	want.Settings = deploy.Settings{MinInstances: 1, MaxInstances: 4}
	want.Instances = deploy.Instances{Desired: 1}
	want.UpdatedAt = clock0.Add(2 * time.Second)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("update (-want +got):\n%s", diff)
	}
	if again := h.do("alice", http.MethodGet, "/deploy/"+d.ID, nil).view(t); !cmp.Equal(want, again) {
		t.Errorf("get after update (-want +got):\n%s", cmp.Diff(want, again))
	}
	stored, _ := h.store.Get(d.ID)
	if stored.HFToken != hfToken {
		t.Error("update dropped the stored HF token")
	}
}

func TestUpdateErrors(t *testing.T) {
	h := newHarness(t, 4)
	b := createBody("big")
	b["num_gpus"] = 2
	b["settings"] = map[string]any{"min_instances": 1, "max_instances": 2}
	big := h.do("alice", http.MethodPost, "/deploy/llm", b).view(t)
	d := h.create("alice", "m")
	settings := func(min, max any) map[string]any {
		return map[string]any{"settings": map[string]any{"min_instances": min, "max_instances": max}}
	}
	tests := []struct {
		name string
		id   string
		body any
		want apiError
	}{
		{"no settings", d.ID, map[string]any{"gpu": "H100-80GB"},
			apiError{Status: 400, Type: "invalid_request_error", Code: "missing_settings", Param: strp("settings")}},
		{"invalid JSON", d.ID, `{"settings":`, apiError{Status: 400, Type: "invalid_request_error", Code: "invalid_json"}},
		{"wrong type", d.ID, settings("one", 2),
			apiError{Status: 400, Type: "invalid_request_error", Code: "invalid_type", Param: strp("settings.min_instances")}},
		{"min over max", d.ID, settings(3, 2),
			apiError{Status: 422, Type: "invalid_request_error", Code: "invalid_value", Param: strp("settings.min_instances")}},
		{"max 0", d.ID, settings(0, 0),
			apiError{Status: 422, Type: "invalid_request_error", Code: "invalid_value", Param: strp("settings.max_instances")}},
		// big holds 2 GPUs at min 1; m at min 3 x 1 GPU would make 5 > 4.
		{"quota", d.ID, settings(3, 3),
			apiError{Status: 422, Type: "invalid_request_error", Code: "quota_exceeded", Param: strp("settings.min_instances")}},
		{"quota counts the updated deployment at its new min", big.ID, settings(3, 3),
			apiError{Status: 422, Type: "invalid_request_error", Code: "quota_exceeded", Param: strp("settings.min_instances")}},
		{"body over 1 MiB", d.ID, `{"settings":{"min_instances":0,"max_instances":1},"pad":"` + strings.Repeat("x", 1<<20) + `"}`,
			apiError{Status: 413, Type: "invalid_request_error", Code: "body_too_large"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.do("alice", http.MethodPut, "/deploy/"+tt.id, tt.body).wantErr(t, tt.want)
		})
	}
	for _, v := range []deploy.View{big, d} {
		after, _ := h.store.Get(v.ID)
		if diff := cmp.Diff(v.Settings, after.Settings); diff != "" {
			t.Errorf("refused updates changed %s (-want +got):\n%s", v.FullName, diff)
		}
	}
	// Within quota succeeds: big at min 1 (2 GPUs) + m at min 2 (2 GPUs) = 4.
	h.do("alice", http.MethodPut, "/deploy/"+d.ID, settings(2, 2)).view(t)
}

func TestDelete(t *testing.T) {
	h := newHarness(t, 0)
	d := h.create("alice", "m")
	got := h.do("alice", http.MethodDelete, "/deploy/"+d.ID, nil).view(t)
	if got.ID != d.ID || got.Status != deploy.StatusDeleted {
		t.Errorf("delete returned %s status %q, want %s deleted", got.ID, got.Status, d.ID)
	}
	if e := h.do("alice", http.MethodGet, "/deploy/"+d.ID, nil).err(t); e.Status != 404 {
		t.Errorf("GET after DELETE: %+v, want 404", e)
	}
	if e := h.do("alice", http.MethodDelete, "/deploy/"+d.ID, nil).err(t); e.Status != 404 {
		t.Errorf("second DELETE: %+v, want 404", e)
	}
	if got := names(t, h.do("alice", http.MethodGet, "/deploy/list", nil)); len(got) != 0 {
		t.Errorf("list after delete = %v", got)
	}
	// The name is free again.
	h.create("alice", "m")
}
