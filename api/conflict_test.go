package api

import (
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/internal/storetest"
)

// TestConflict: over a store other replicas write too, an update or delete
// of a deployment another replica changed since this one read it answers
// 409 conflict, changing nothing; a GET then shows the other change and a
// retry succeeds. A name another replica holds is the usual 409
// duplicate_model_name.
func TestConflict(t *testing.T) {
	backend := storetest.New()
	store, err := deploy.NewSharedStore(backend, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := startHarness(t, Config{Store: store})
	d := h.create("alice", "m")
	backend.Remote(d.ID, func(d *deploy.Deployment) { d.Settings.MaxInstances = 5 })
	conflict := apiError{Status: http.StatusConflict, Type: "conflict_error", Code: "conflict",
		Message: "the deployment was changed by another request at the same time, and this change was not applied; read it again (GET /deploy/{deploy_id}) and retry"}

	put := map[string]any{"settings": map[string]any{"min_instances": 1, "max_instances": 3}}
	if diff := cmp.Diff(conflict, h.do("alice", http.MethodPut, "/deploy/"+d.ID, put).err(t)); diff != "" {
		t.Errorf("PUT after another replica's change (-want +got):\n%s", diff)
	}
	if got := h.do("alice", http.MethodGet, "/deploy/"+d.ID, nil).view(t); got.Settings.MaxInstances != 5 || got.Settings.MinInstances != 0 {
		t.Errorf("GET after the conflict: settings %+v, want the other replica's (max 5) and not the refused one", got.Settings)
	}
	if got := h.do("alice", http.MethodPut, "/deploy/"+d.ID, put).view(t); got.Settings.MaxInstances != 3 {
		t.Errorf("retried PUT: settings %+v", got.Settings)
	}

	backend.Remote(d.ID, func(d *deploy.Deployment) { d.Settings.MaxInstances = 6 })
	if diff := cmp.Diff(conflict, h.do("alice", http.MethodDelete, "/deploy/"+d.ID, nil).err(t)); diff != "" {
		t.Errorf("DELETE after another replica's change (-want +got):\n%s", diff)
	}
	if r := h.do("alice", http.MethodDelete, "/deploy/"+d.ID, nil); r.status != http.StatusOK {
		t.Errorf("retried DELETE: %d %s", r.status, r.body)
	}

	theirs := deploy.Deployment{ID: "d-theirs", Owner: "alice", ModelName: "Taken"}
	backend.RemoteCreate(theirs)
	want := apiError{Status: http.StatusConflict, Type: "conflict_error", Code: "duplicate_model_name", Param: strp("model_name"),
		Message: `you already have a deployment named "taken"; model names are unique regardless of case`}
	if diff := cmp.Diff(want, h.do("alice", http.MethodPost, "/deploy/llm", createBody("taken")).err(t)); diff != "" {
		t.Errorf("POST of a name another replica holds (-want +got):\n%s", diff)
	}
}
