package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/thawhq/thaw/deploy"
)

const testToken = "tok-dev"

// fakeDeployAPI is a small in-memory deploy API. A GET of a deployment with
// a script answers the script's next state (staying on the last), to drive
// create --wait.
type fakeDeployAPI struct {
	mu       sync.Mutex // mu guards everything below.
	views    map[string]deploy.View
	scripts  map[string][]deploy.View
	bodies   []string // request bodies of POST and PUT, in order
	queries  []string // raw queries of GET /deploy/list
	lastList []byte   // body of the last GET /deploy/list answer
	calls    []string // "METHOD path" of every request, in order
	// deleteNoContent makes DELETE answer 204 with no body, as some
	// servers do, instead of thaw's deleted deploy object.
	deleteNoContent bool
}

func newFakeDeployAPI(t *testing.T, views ...deploy.View) *fakeDeployAPI {
	t.Helper()
	f := &fakeDeployAPI{views: map[string]deploy.View{}, scripts: map[string][]deploy.View{}}
	for _, v := range views {
		f.views[v.ID] = v
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /deploy/llm", f.create)
	mux.HandleFunc("GET /deploy/list", f.list)
	mux.HandleFunc("GET /deploy/{id}", f.get)
	mux.HandleFunc("PUT /deploy/{id}", f.update)
	mux.HandleFunc("DELETE /deploy/{id}", f.delete)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+testToken {
			apiError(w, 401, "authentication_error", "invalid token")
			return
		}
		f.mu.Lock()
		f.calls = append(f.calls, r.Method+" "+r.URL.Path)
		f.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	t.Setenv("THAW_TOKEN", testToken)
	t.Setenv("THAW_ADDR", strings.TrimPrefix(srv.URL, "http://")) // no scheme: must work
	t.Setenv("HF_TOKEN", "")
	return f
}

func apiError(w http.ResponseWriter, status int, code, msg string) {
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"error":{"message":%q,"type":"invalid_request_error","param":null,"code":%q}}`, msg, code)
}

func (f *fakeDeployAPI) create(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	var req deploy.CreateRequest
	if err := json.Unmarshal(b, &req); err != nil {
		apiError(w, 400, "bad_json", err.Error())
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bodies = append(f.bodies, string(b))
	v := deploy.View{ID: "d-new", ModelName: req.ModelName, FullName: "dev/" + req.ModelName, Type: "llm",
		Status: deploy.StatusDeploying, Config: deploy.Config{GPU: req.GPU, NumGPUs: 1, MaxBatchSize: 96},
		Settings: deploy.Settings{MaxInstances: 1}}
	if req.Settings != nil {
		v.Settings = *req.Settings
	}
	f.views[v.ID] = v
	f.next(v.ID)
	v = f.views[v.ID]
	json.NewEncoder(w).Encode(v)
}

func (f *fakeDeployAPI) list(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queries = append(f.queries, r.URL.RawQuery)
	out := []map[string]any{}
	for _, id := range []string{"d-1", "d-2", "d-3"} { // fixed order
		if v, ok := f.views[id]; ok && (r.URL.Query().Get("status") == "" || string(v.Status) == r.URL.Query().Get("status")) {
			var m map[string]any
			b, _ := json.Marshal(v)
			json.Unmarshal(b, &m)
			m["server_only"] = "kept" // --json must pass fields through
			out = append(out, m)
		}
	}
	f.lastList, _ = json.Marshal(out)
	w.Write(f.lastList)
}

func (f *fakeDeployAPI) get(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := r.PathValue("id")
	f.next(id)
	v, ok := f.views[id]
	if !ok {
		apiError(w, 404, "not_found", "deployment "+id+" not found")
		return
	}
	json.NewEncoder(w).Encode(v)
}

// next moves a scripted deployment to its next state. Called with mu held.
func (f *fakeDeployAPI) next(id string) {
	if s := f.scripts[id]; len(s) > 0 {
		f.views[id] = s[0]
		if len(s) > 1 {
			f.scripts[id] = s[1:]
		}
	}
}

func (f *fakeDeployAPI) update(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	var req deploy.UpdateRequest
	json.Unmarshal(b, &req)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bodies = append(f.bodies, string(b))
	v, ok := f.views[r.PathValue("id")]
	if !ok || req.Settings == nil {
		apiError(w, 404, "not_found", "deployment not found")
		return
	}
	v.Settings = *req.Settings
	f.views[v.ID] = v
	json.NewEncoder(w).Encode(v)
}

func (f *fakeDeployAPI) delete(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.views[r.PathValue("id")]
	if !ok {
		apiError(w, 404, "not_found", "deployment not found")
		return
	}
	delete(f.views, v.ID)
	if f.deleteNoContent {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	v.Status = deploy.StatusDeleted
	json.NewEncoder(w).Encode(v)
}

func (f *fakeDeployAPI) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeDeployAPI) listQueries() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.queries...)
}

func (f *fakeDeployAPI) has(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.views[id]
	return ok
}

func (f *fakeDeployAPI) sent() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.bodies...)
}

var (
	viewOne = deploy.View{ID: "d-1", ModelName: "llama", FullName: "dev/llama", Type: "llm", Status: deploy.StatusRunning,
		Instances: deploy.Instances{Running: 1, Pending: 1, Desired: 2, Reason: "no free H100-80GB GPU: 8 of 8 in use"},
		Config:    deploy.Config{GPU: "H100-80GB", NumGPUs: 2, MaxBatchSize: 64, Weights: deploy.Weights{Repo: "meta/llama", Revision: "main"}},
		Settings:  deploy.Settings{MinInstances: 1, MaxInstances: 3}}
	viewTwo = deploy.View{ID: "d-2", ModelName: "a-much-longer-model-name", FullName: "dev/a-much-longer-model-name", Type: "llm",
		Status: deploy.StatusDeploying, Config: deploy.Config{GPU: "A100-80GB", NumGPUs: 1, MaxBatchSize: 8},
		Settings: deploy.Settings{MaxInstances: 1}}
)

// run calls runDeploy and returns what it printed.
func run(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = runDeploy(ctx, args, &out, &errOut)
	return out.String(), errOut.String(), err
}

// table parses aligned output: it checks that every value starts exactly
// under its header and returns the rows as column -> value.
func table(t *testing.T, out string) []map[string]string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	header := lines[0]
	var names []string
	var starts []int
	for i, f := range strings.Fields(header) {
		from := 0
		if i > 0 {
			from = starts[i-1] + len(names[i-1])
		}
		names = append(names, f)
		starts = append(starts, from+strings.Index(header[from:], f))
	}
	var rows []map[string]string
	for _, l := range lines[1:] {
		row := map[string]string{}
		for i, s := range starts {
			if len(l) <= s || l[s] == ' ' || (s > 0 && l[s-1] != ' ') {
				t.Fatalf("column %s misaligned at %d in\n%s", names[i], s, out)
			}
			end := len(l)
			if i+1 < len(starts) {
				end = starts[i+1]
			}
			row[names[i]] = strings.TrimSpace(l[s:end])
		}
		rows = append(rows, row)
	}
	return rows
}

func TestDeployListTable(t *testing.T) {
	f := newFakeDeployAPI(t, viewOne, viewTwo)
	out, _, err := run(t, "list")
	if err != nil {
		t.Fatal(err)
	}
	want := []map[string]string{{
		"DEPLOY_ID": "d-1", "MODEL": "dev/llama", "STATUS": "running", "GPU": "2xH100-80GB", "BATCH": "64",
		"MIN/MAX": "1/3", "RUNNING": "1", "PENDING": "1", "DESIRED": "2", "REASON": "no free H100-80GB GPU: 8 of 8 in use",
	}, {
		"DEPLOY_ID": "d-2", "MODEL": "dev/a-much-longer-model-name", "STATUS": "deploying", "GPU": "1xA100-80GB", "BATCH": "8",
		"MIN/MAX": "0/1", "RUNNING": "0", "PENDING": "0", "DESIRED": "0", "REASON": "-",
	}}
	if diff := cmp.Diff(want, table(t, out)); diff != "" {
		t.Errorf("list table (-want +got):\n%s\n%s", diff, out)
	}
	if _, _, err := run(t, "list", "--status", "running"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"", "status=running"}, f.listQueries()); diff != "" {
		t.Errorf("list queries (-want +got):\n%s", diff)
	}
}

func TestDeployJSONIsTheServers(t *testing.T) {
	f := newFakeDeployAPI(t, viewOne, viewTwo)
	out, _, err := run(t, "list", "--json", "--status", "deploying")
	if err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("list --json printed %q: %v", out, err)
	}
	if len(got) != 1 || got[0]["deploy_id"] != "d-2" || got[0]["server_only"] != "kept" {
		t.Errorf("list --json = %s, want the server's array with d-2 only", out)
	}
	var want bytes.Buffer
	f.mu.Lock()
	json.Indent(&want, f.lastList, "", "  ")
	f.mu.Unlock()
	if diff := cmp.Diff(want.String()+"\n", out); diff != "" {
		t.Errorf("list --json is not the server's JSON indented (-want +got):\n%s", diff)
	}

	out, _, err = run(t, "get", "d-1", "--json") // flag after the id
	if err != nil {
		t.Fatal(err)
	}
	var v deploy.View
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(viewOne, v); diff != "" {
		t.Errorf("get --json (-want +got):\n%s", diff)
	}
}

func TestDeployGetDetails(t *testing.T) {
	newFakeDeployAPI(t, viewOne)
	out, _, err := run(t, "get", "d-1")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"deploy_id:      d-1\n", "model:          dev/llama\n", "gpu:            2xH100-80GB\n",
		"weights:        meta/llama@main\n", "instances:      1 running, 1 pending, 2 desired\n",
		"reason:         no free H100-80GB GPU: 8 of 8 in use\n", "min/max:        1/3\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("get output lacks %q:\n%s", want, out)
		}
	}
	_, _, err = run(t, "get", "nope")
	if want := `thaw deploy get: no deployment with that id or name: "nope" (see thaw deploy list)`; err == nil || err.Error() != want {
		t.Errorf("get nope: err = %v, want %s", err, want)
	}
}

func TestDeployCreateSendsOnlyGivenFields(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{{
		name: "minimal",
		args: []string{"--model-name", "m", "--gpu", "A100-80GB", "--hf-repo", "org/r"},
		want: `{"model_name":"m","gpu":"A100-80GB","num_gpus":null,"max_batch_size":null,"hf":{"repo":"org/r"},"settings":null}`,
	}, {
		name: "everything",
		args: []string{"--model-name=m", "--gpu=H100-80GB", "--num-gpus=2", "--max-batch-size=16", "--hf-repo=org/r",
			"--hf-revision=v1", "--hf-token=secret", "--min-instances=1", "--max-instances=4", "--extra-args=--dtype half"},
		want: `{"model_name":"m","gpu":"H100-80GB","num_gpus":2,"max_batch_size":16,"hf":{"repo":"org/r","revision":"v1","token":"secret"},` +
			`"settings":{"min_instances":1,"max_instances":4},"extra_args":["--dtype","half"]}`,
	}, {
		name: "min above the default max raises max",
		args: []string{"--model-name", "m", "--gpu", "A100-80GB", "--min-instances", "2"},
		want: `{"model_name":"m","gpu":"A100-80GB","num_gpus":null,"max_batch_size":null,"hf":null,"settings":{"min_instances":2,"max_instances":2}}`,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeDeployAPI(t)
			out, _, err := run(t, append([]string{"create"}, tt.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]string{tt.want}, f.sent()); diff != "" {
				t.Errorf("request body (-want +got):\n%s", diff)
			}
			if rows := table(t, out); len(rows) != 1 || rows[0]["DEPLOY_ID"] != "d-new" || rows[0]["MODEL"] != "dev/m" {
				t.Errorf("create printed:\n%s", out)
			}
		})
	}
}

func TestDeployCreateHFTokenFromEnv(t *testing.T) {
	f := newFakeDeployAPI(t)
	t.Setenv("HF_TOKEN", "from-env")
	if _, _, err := run(t, "create", "--model-name", "m", "--hf-repo", "org/r"); err != nil {
		t.Fatal(err)
	}
	if got := f.sent(); len(got) != 1 || !strings.Contains(got[0], `"hf":{"repo":"org/r","token":"from-env"}`) {
		t.Errorf("request bodies = %q, want the HF_TOKEN in hf", got)
	}
}

func TestDeployUpdateChangesOnlyGivenFields(t *testing.T) {
	f := newFakeDeployAPI(t, viewOne) // settings 1/3
	out, _, err := run(t, "update", "d-1", "--max-instances", "5")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{`{"settings":{"min_instances":1,"max_instances":5}}`}, f.sent()); diff != "" {
		t.Errorf("PUT body (-want +got):\n%s", diff)
	}
	if rows := table(t, out); len(rows) != 1 || rows[0]["MIN/MAX"] != "1/5" {
		t.Errorf("update printed:\n%s", out)
	}
	if _, _, err := run(t, "update", "d-1"); err == nil || !strings.Contains(err.Error(), "nothing to change") {
		t.Errorf("update without flags: err = %v", err)
	}
}

func TestDeployDelete(t *testing.T) {
	f := newFakeDeployAPI(t, viewOne)
	out, _, err := run(t, "delete", "d-1")
	if err != nil || out != "deleted d-1\n" {
		t.Fatalf("delete: out %q, err %v", out, err)
	}
	if f.has("d-1") {
		t.Error("d-1 still exists")
	}
	if _, _, err := run(t, "delete"); err == nil || err.Error() != "thaw deploy delete: missing deployment id or name (see thaw deploy list)" {
		t.Errorf("delete without id: err = %v", err)
	}
	if _, _, err := run(t, "delete", "a", "b"); err == nil || err.Error() != `thaw deploy delete: want one deployment id or name, got ["a" "b"]` {
		t.Errorf("delete a b: err = %v", err)
	}
}

func TestDeployDeleteJSON(t *testing.T) {
	t.Run("the server's deleted deploy object", func(t *testing.T) {
		newFakeDeployAPI(t, viewOne)
		out, _, err := run(t, "delete", "--json", "llama")
		if err != nil {
			t.Fatal(err)
		}
		var got deploy.View
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("delete --json printed %q: %v", out, err)
		}
		want := viewOne
		want.Status = deploy.StatusDeleted
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("delete --json (-want +got):\n%s", diff)
		}
		if !strings.HasPrefix(out, "{\n  \"deploy_id\": \"d-1\",\n") {
			t.Errorf("delete --json is not indented:\n%s", out)
		}
	})
	t.Run("204 from the server", func(t *testing.T) {
		f := newFakeDeployAPI(t, viewOne)
		f.deleteNoContent = true
		out, _, err := run(t, "delete", "d-1", "--json")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff("{\n  \"deploy_id\": \"d-1\",\n  \"status\": \"deleted\"\n}\n", out); diff != "" {
			t.Errorf("delete --json after 204 (-want +got):\n%s", diff)
		}
	})
}

// TestDeployByName: get, update and delete take the model name as well as
// the deploy id, and refuse a name that matches none or several.
func TestDeployByName(t *testing.T) {
	twin := viewTwo
	twin.ID, twin.ModelName, twin.FullName = "d-3", "llama", "dev/llama" // a server may hold duplicates
	tests := []struct {
		name  string
		views []deploy.View
		args  []string
		calls []string // requests after GET /deploy/list
		err   string
	}{
		{name: "get by model name", views: []deploy.View{viewOne, viewTwo}, args: []string{"get", "llama"},
			calls: []string{"GET /deploy/d-1"}},
		{name: "get by full name", views: []deploy.View{viewOne, viewTwo}, args: []string{"get", "dev/a-much-longer-model-name", "--json"},
			calls: []string{"GET /deploy/d-2"}},
		{name: "get by id", views: []deploy.View{viewOne, viewTwo}, args: []string{"get", "d-2"},
			calls: []string{"GET /deploy/d-2"}},
		{name: "update by name", views: []deploy.View{viewOne}, args: []string{"update", "dev/llama", "--min-instances", "0"},
			calls: []string{"PUT /deploy/d-1"}},
		{name: "delete by name", views: []deploy.View{viewOne, viewTwo}, args: []string{"delete", "a-much-longer-model-name"},
			calls: []string{"DELETE /deploy/d-2"}},
		{name: "names are exact", views: []deploy.View{viewOne}, args: []string{"get", "Llama"},
			err: `thaw deploy get: no deployment with that id or name: "Llama" (see thaw deploy list)`},
		{name: "another owner's name", views: []deploy.View{viewOne}, args: []string{"delete", "bob/llama"},
			err: `thaw deploy delete: no deployment with that id or name: "bob/llama" (see thaw deploy list)`},
		{name: "ambiguous", views: []deploy.View{viewOne, twin}, args: []string{"delete", "llama"},
			err: `thaw deploy delete: more than one deployment with that id or name: "llama" is d-1 (dev/llama), d-3 (dev/llama); use the deploy id (see thaw deploy list)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeDeployAPI(t, tt.views...)
			_, _, err := run(t, tt.args...)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("err = %v, want %s", err, tt.err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			want := append([]string{"GET /deploy/list"}, tt.calls...)
			if diff := cmp.Diff(want, f.requests()); diff != "" {
				t.Errorf("requests (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDeployWait(t *testing.T) {
	starting := deploy.View{ID: "d-new", FullName: "dev/m", Status: deploy.StatusDeploying,
		Config: deploy.Config{GPU: "A100-80GB", NumGPUs: 1, MaxBatchSize: 8}, Settings: deploy.Settings{MinInstances: 1, MaxInstances: 1},
		Instances: deploy.Instances{Pending: 1, Desired: 1, Reason: "starting"}}
	ready := starting
	ready.Status, ready.Instances = deploy.StatusRunning, deploy.Instances{Running: 1, Desired: 1}
	failed := starting
	failed.Status, failed.FailReason = deploy.StatusFailed, "simulator exited: status 1"

	t.Run("until running", func(t *testing.T) {
		f := newFakeDeployAPI(t)
		f.scripts["d-new"] = []deploy.View{starting, starting, ready}
		out, errOut, err := run(t, "create", "--model-name", "m", "--wait")
		if err != nil {
			t.Fatal(err)
		}
		want := "deploying: 0 running, 1 pending (desired 1): starting\nrunning: 1 running, 0 pending (desired 1)\n"
		if errOut != want {
			t.Errorf("progress = %q, want %q", errOut, want)
		}
		if rows := table(t, out); len(rows) != 1 || rows[0]["STATUS"] != "running" || rows[0]["RUNNING"] != "1" {
			t.Errorf("create --wait printed:\n%s", out)
		}
	})
	t.Run("failed", func(t *testing.T) {
		f := newFakeDeployAPI(t)
		f.scripts["d-new"] = []deploy.View{starting, failed}
		_, _, err := run(t, "create", "--model-name", "m", "--wait")
		if err == nil || err.Error() != "deployment d-new failed: simulator exited: status 1" {
			t.Errorf("err = %v, want the fail reason", err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		f := newFakeDeployAPI(t)
		f.scripts["d-new"] = []deploy.View{starting}
		start := time.Now()
		_, _, err := run(t, "create", "--model-name", "m", "--wait", "--wait-timeout", "1200ms")
		if err == nil || !strings.Contains(err.Error(), "cannot serve yet after waiting 1.2s") {
			t.Errorf("err = %v, want a timeout", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("timed out after %s", d)
		}
	})
}

func TestDeployUsageAndEnv(t *testing.T) {
	newFakeDeployAPI(t)
	_, errOut, err := run(t, "create", "-h")
	if err != nil || !strings.Contains(errOut, "usage: thaw deploy create") || !strings.Contains(errOut, "-max-batch-size") {
		t.Errorf("create -h: err %v, printed %q", err, errOut)
	}
	if _, _, err := run(t, "bogus"); err == nil || !strings.Contains(err.Error(), `unknown command "bogus"`) {
		t.Errorf("bogus: err = %v", err)
	}
	if _, _, err := run(t, "list", "--bogus"); err == nil || !strings.Contains(err.Error(), "thaw deploy list: flag provided but not defined: -bogus") {
		t.Errorf("list --bogus: err = %v", err)
	}
	if _, _, err := run(t); err == nil {
		t.Error("no command: no error")
	}

	t.Setenv("THAW_TOKEN", "wrong")
	if _, _, err := run(t, "list"); err == nil || err.Error() != "401 authentication_error: invalid token" {
		t.Errorf("wrong token: err = %v", err)
	}
	t.Setenv("THAW_TOKEN", "")
	if _, _, err := run(t, "list"); err == nil || !strings.Contains(err.Error(), "THAW_TOKEN is not set") {
		t.Errorf("no token: err = %v", err)
	}
}
