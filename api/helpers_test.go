package api

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/thawhq/thaw/auth"
	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/internal/openaitest"
)

const hfToken = "hf_SECRETtoken123"

var clock0 = time.Date(2025, 5, 1, 9, 0, 0, 0, time.UTC)

// fakeLive reports a fixed Live per deployment ID; others are running.
type fakeLive struct {
	mu   sync.Mutex // mu guards byID.
	byID map[string]deploy.Live
}

func (f *fakeLive) Live(d deploy.Deployment) deploy.Live {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l, ok := f.byID[d.ID]; ok {
		return l
	}
	return deploy.Live{Status: deploy.StatusRunning, Instances: deploy.Instances{Desired: d.Settings.MinInstances}}
}

func (f *fakeLive) set(id string, l deploy.Live) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.byID[id] = l
}

type harness struct {
	t     *testing.T
	srv   *httptest.Server
	store *deploy.Store
	live  *fakeLive
}

func newHarness(t *testing.T, quota int) *harness {
	t.Helper()
	store, err := deploy.OpenStore(filepath.Join(t.TempDir(), "deployments.json"))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	now := clock0
	return startHarness(t, Config{
		Store: store, GPUQuota: quota,
		Now: func() time.Time {
			mu.Lock()
			defer mu.Unlock()
			now = now.Add(time.Second)
			return now
		},
	})
}

// startHarness serves the API of cfg, with a fakeLive (cfg.Live is
// replaced) and a discarding logger unless cfg has one.
func startHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	live := &fakeLive{byID: map[string]deploy.Live{}}
	cfg.Live = live
	srv := httptest.NewServer(newMux(t, cfg))
	t.Cleanup(srv.Close)
	return &harness{t: t, srv: srv, store: cfg.Store, live: live}
}

// newMux registers the API of cfg (logging nowhere unless cfg.Logger is
// set) behind alice's and bob's bearer tokens.
func newMux(t testing.TB, cfg Config) *http.ServeMux {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	a.Register(mux, auth.NewUsers(map[string]string{"alice": "tok-alice", "bob": "tok-bob"}).Require)
	return mux
}

// response is what a client saw.
type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends method path with body (a string, []byte or a value to encode) as
// user, and checks that no response ever carries the HF token.
func (h *harness) do(user, method, path string, body any) response {
	h.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		js, err := json.Marshal(b)
		if err != nil {
			h.t.Fatal(err)
		}
		rd = bytes.NewReader(js)
	}
	req, err := http.NewRequest(method, h.srv.URL+path, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	if user != "" {
		req.Header.Set("Authorization", "Bearer tok-"+user)
	}
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	if bytes.Contains(b, []byte(hfToken)) || strings.Contains(strings.ToLower(string(b)), "hf_token") {
		h.t.Errorf("%s %s: response leaks the HF token: %s", method, path, b)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// decodeOK decodes r's JSON body as a T, failing the test unless the
// status is 200 and the body is a T.
func decodeOK[T any](t *testing.T, r response) T {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("status = %d, want 200; body %s", r.status, r.body)
	}
	var v T
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("decode %T from %s: %v", v, r.body, err)
	}
	return v
}

// view decodes a deploy object, failing unless status is 200.
func (r response) view(t *testing.T) deploy.View {
	t.Helper()
	return decodeOK[deploy.View](t, r)
}

// apiError is the OpenAI error envelope with a nullable param.
type apiError struct {
	Status  int
	Type    string
	Code    string
	Param   *string
	Message string
}

// wantErr checks that r is the OpenAI-shaped error want (its message
// aside), and returns the error it is.
func (r response) wantErr(t *testing.T, want apiError) apiError {
	t.Helper()
	got := r.err(t)
	if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(apiError{}, "Message")); diff != "" {
		t.Errorf("error (-want +got):\n%s\nmessage: %s", diff, got.Message)
	}
	return got
}

func (r response) err(t *testing.T) apiError {
	t.Helper()
	e, err := openaitest.DecodeError(r.body)
	if err != nil {
		t.Fatalf("status %d: not an OpenAI error body: %s (%v)", r.status, r.body, err)
	}
	return apiError{Status: r.status, Type: e.Type, Code: e.Code, Param: e.Param, Message: e.Message}
}

func createBody(model string) map[string]any {
	return map[string]any{
		"model_name": model, "gpu": "A100-80GB", "num_gpus": 1, "max_batch_size": 8,
		"hf":       map[string]any{"repo": "meta-llama/Llama-2-7b-chat-hf", "token": hfToken},
		"settings": map[string]any{"min_instances": 0, "max_instances": 2},
	}
}

func (h *harness) create(user, model string) deploy.View {
	h.t.Helper()
	return h.do(user, http.MethodPost, "/deploy/llm", createBody(model)).view(h.t)
}

func strp(s string) *string { return &s }
