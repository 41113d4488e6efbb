package api

import (
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/internal/logtest"
)

// memBackend keeps deployments in memory; writes fail while fail is set.
type memBackend struct {
	mu   sync.Mutex // mu guards fail.
	fail error
}

func (m *memBackend) Load() ([]deploy.Deployment, error) { return nil, nil }

func (m *memBackend) Put([]deploy.Deployment, deploy.Deployment) error { return m.err() }

func (m *memBackend) Delete([]deploy.Deployment, string) error { return m.err() }

func (m *memBackend) err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.fail
}

func (m *memBackend) setFail(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fail = err
}

// newMemHarness is newHarness over a memBackend, logging to the returned
// buffer.
func newMemHarness(t *testing.T) (*harness, *memBackend, *logtest.Buffer) {
	t.Helper()
	backend := &memBackend{}
	store, err := deploy.NewStore(backend)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logtest.Buffer{}
	h := startHarness(t, Config{Store: store, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	return h, backend, logs
}

// TestStoreUnavailable: a failed store write answers 503 with a plain
// message and Retry-After; the path and OS error go to the log only.
func TestStoreUnavailable(t *testing.T) {
	h, backend, logs := newMemHarness(t)
	d := h.create("alice", "m")
	cause := &fs.PathError{Op: "open", Path: "/srv/thaw/.thaw/deployments.json", Err: errors.New("no space left on device")}
	backend.setFail(cause)

	for _, r := range []struct {
		method, path string
		body         any
	}{
		{http.MethodPost, "/deploy/llm", createBody("other")},
		{http.MethodPut, "/deploy/" + d.ID, map[string]any{"settings": map[string]any{"min_instances": 0, "max_instances": 3}}},
		{http.MethodDelete, "/deploy/" + d.ID, nil},
	} {
		t.Run(r.method, func(t *testing.T) {
			resp := h.do("alice", r.method, r.path, r.body)
			want := apiError{Status: 503, Type: "service_unavailable_error", Code: "store_unavailable",
				Message: "deployment store unavailable; nothing was changed, retry later"}
			if diff := cmp.Diff(want, resp.err(t)); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			if got := resp.header.Get("Retry-After"); got != "5" {
				t.Errorf("Retry-After = %q, want 5", got)
			}
			if body := string(resp.body); strings.Contains(body, "/srv") || strings.Contains(body, "no space") {
				t.Errorf("body shows the server's error: %s", body)
			}
		})
	}
	if got := logs.String(); !strings.Contains(got, cause.Error()) {
		t.Errorf("log lacks the store's error %q:\n%s", cause, got)
	}
	// Nothing changed.
	backend.setFail(nil)
	after := h.do("alice", http.MethodGet, "/deploy/"+d.ID, nil).view(t)
	if diff := cmp.Diff(d, after); diff != "" {
		t.Errorf("deployment after failed writes (-want +got):\n%s", diff)
	}
}
