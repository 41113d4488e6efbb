package nomad

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/thawhq/thaw/deploy"
)

// fakeVars serves Nomad's Variables HTTP API (/v1/var, /v1/vars) from memory
// with its check-and-set (?cas=): a write or delete at a stale index answers
// 409 with the Variable that is there, as Nomad does. No blocking queries.
type fakeVars struct {
	// mu guards index and vars.
	mu    sync.Mutex
	index uint64
	vars  map[string]api.Variable
}

func (f *fakeVars) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	w.Header().Set("X-Nomad-Index", strconv.FormatUint(f.index, 10))
	if r.URL.Path == "/v1/vars" {
		out := []api.VariableMetadata{}
		for p, v := range f.vars {
			if strings.HasPrefix(p, r.URL.Query().Get("prefix")) {
				out = append(out, *v.Metadata())
			}
		}
		_ = json.NewEncoder(w).Encode(out)
		return
	}
	path := strings.TrimPrefix(r.URL.Path, "/v1/var/")
	old, exists := f.vars[path]
	if cas := r.URL.Query().Get("cas"); cas != "" && cas != strconv.FormatUint(old.ModifyIndex, 10) {
		w.WriteHeader(http.StatusConflict)
		_ = json.NewEncoder(w).Encode(old)
		return
	}
	switch r.Method {
	case http.MethodGet:
		if !exists {
			http.Error(w, "variable not found", http.StatusNotFound)
			return
		}
		_ = json.NewEncoder(w).Encode(old)
	case http.MethodPut:
		var v api.Variable
		if err := json.NewDecoder(r.Body).Decode(&v); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		f.index++
		v.Path, v.ModifyIndex, v.ModifyTime = path, f.index, time.Now().UnixNano()
		f.vars[path] = v
		_ = json.NewEncoder(w).Encode(v)
	case http.MethodDelete:
		f.index++
		delete(f.vars, path)
		w.WriteHeader(http.StatusNoContent)
	}
}

func fakeVariableStore(t *testing.T) (VariableStore, *fakeVars) {
	t.Helper()
	f := &fakeVars{vars: map[string]api.Variable{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	c, err := api.NewClient(&api.Config{Address: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	return VariableStore{Client: c}, f
}

// TestVariableStoreChecked: writes name the ModifyIndex they change; a
// stale one is deploy.ErrConflict and writes nothing; model names are
// reserved regardless of case and released on delete.
func TestVariableStoreChecked(t *testing.T) {
	v, f := fakeVariableStore(t)
	d := deploy.Deployment{ID: "d-1", Owner: "alice", ModelName: "Llama-3.1"}
	v1, err := v.Create(d)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := f.vars["thaw/names/alice/llama-3_2e1"]; !ok {
		t.Errorf("no reservation at thaw/names/alice/llama-3_2e1: %v", f.vars)
	}
	dup := deploy.Deployment{ID: "d-2", Owner: "alice", ModelName: "LLAMA-3.1"}
	if _, err := v.Create(dup); !errors.Is(err, deploy.ErrDuplicate) {
		t.Errorf("create of a reserved name: %v, want ErrDuplicate", err)
	}
	if _, err := v.Read("d-2"); !errors.Is(err, deploy.ErrNotFound) {
		t.Errorf("the refused create wrote its record: %v", err)
	}
	d.Settings.MaxInstances = 3
	v2, err := v.Update(d, v1)
	if err != nil || v2 <= v1 {
		t.Fatalf("update at the current index: %d, %v", v2, err)
	}
	d.Settings.MaxInstances = 9
	if _, err := v.Update(d, v1); !errors.Is(err, deploy.ErrConflict) {
		t.Errorf("update at a stale index: %v, want ErrConflict", err)
	}
	if err := v.Delete(d, v1); !errors.Is(err, deploy.ErrConflict) {
		t.Errorf("delete at a stale index: %v, want ErrConflict", err)
	}
	if r, err := v.Read("d-1"); err != nil || r.Version != v2 || r.Deployment.Settings.MaxInstances != 3 {
		t.Errorf("after the refused writes: %+v, %v; want version %d with max_instances 3", r, err, v2)
	}
	versions, index, err := v.Watch(t.Context(), 0)
	if err != nil || versions["d-1"] != v2 || len(versions) != 1 || index < v2 {
		t.Errorf("Watch = %v at %d, %v; want d-1 at %d", versions, index, err, v2)
	}
	if err := v.Delete(d, v2); err != nil {
		t.Fatal(err)
	}
	if len(f.vars) != 0 {
		t.Errorf("after the delete, Variables left: %v", f.vars)
	}
	if _, err := v.Create(dup); err != nil {
		t.Errorf("create of the released name: %v", err)
	}
}

// TestStaleReservation: a reservation whose deployment does not exist is
// taken over once older than nameGrace, not before; one whose deployment
// exists never is.
func TestStaleReservation(t *testing.T) {
	v, f := fakeVariableStore(t)
	f.vars["thaw/names/alice/m"] = api.Variable{Path: "thaw/names/alice/m", ModifyIndex: 1, ModifyTime: time.Now().UnixNano(),
		Items: api.VariableItems{nameDeployItem: "d-gone"}}
	f.index = 1
	d := deploy.Deployment{ID: "d-1", Owner: "alice", ModelName: "m"}
	if _, err := v.Create(d); !errors.Is(err, deploy.ErrDuplicate) {
		t.Errorf("create over a fresh reservation: %v, want ErrDuplicate (a create in flight)", err)
	}
	v.Now = func() time.Time { return time.Now().Add(nameGrace + time.Second) }
	if _, err := v.Create(d); err != nil {
		t.Errorf("create over a reservation %v old whose deployment is gone: %v", nameGrace, err)
	}
	other := deploy.Deployment{ID: "d-2", Owner: "alice", ModelName: "M"}
	if _, err := v.Create(other); !errors.Is(err, deploy.ErrDuplicate) {
		t.Errorf("create over an old reservation whose deployment exists: %v, want ErrDuplicate", err)
	}
}

// TestNamePath: every reservation path is one Nomad takes, and distinct
// owners and names (other than by case) get distinct paths.
func TestNamePath(t *testing.T) {
	valid := regexp.MustCompile(`^[a-zA-Z0-9-_~/]{1,128}$`)
	long := strings.Repeat("x", 64)
	for _, tt := range []struct{ owner, model, want string }{
		{"alice", "Llama-3.1", "thaw/names/alice/llama-3_2e1"},
		{"alice", "llama-3.1", "thaw/names/alice/llama-3_2e1"},
		{"Alice", "llama_3", "thaw/names/Alice/llama_5f3"},
		{"bob@example.com", "m", "thaw/names/bob_40example_2ecom/m"},
		{"a_2e", "m", "thaw/names/a_5f2e/m"},
		{strings.Repeat("o", 60), long, ""},
	} {
		got := namePath(DefaultNamesPrefix, tt.owner, tt.model)
		if !valid.MatchString(got) {
			t.Errorf("namePath(%q, %q) = %q: Nomad refuses it", tt.owner, tt.model, got)
		}
		if tt.want != "" && got != tt.want {
			t.Errorf("namePath(%q, %q) = %q, want %q", tt.owner, tt.model, got, tt.want)
		}
	}
	if namePath("p", "a.b", "c") == namePath("p", "a", "b.c") {
		t.Error("two owners and names share a path")
	}
	if namePath("p", strings.Repeat("o", 70), long) == namePath("p", strings.Repeat("o", 71), long) {
		t.Error("two long owners share a hashed path")
	}
}
