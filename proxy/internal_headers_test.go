package proxy

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/thawhq/thaw/auth"
	"github.com/thawhq/thaw/routing"
)

// TestNoInternalHeadersUpstream: neither the caller's token nor any of
// thaw's own headers (routing headers Envoy set, the edge's grant, the hold
// timeout) reach a model server, on any inference path.
func TestNoInternalHeadersUpstream(t *testing.T) {
	var mu sync.Mutex
	var got []http.Header
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request, _ map[string]any) {
		mu.Lock()
		got = append(got, r.Header.Clone())
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"choices":[{"text":"hi","message":{"content":"hi"}}]}`))
	})
	h := newHarness(t, Config{})
	h.p.SetEndpoints("d1", 2, map[string]string{"i1": up.addr()})
	hdr := http.Header{
		"X-Thaw-Deploy-Id": {"d1"}, "X-Thaw-Route": {"direct"}, "X-Thaw-Grant": {"g"},
		"X-Thaw-Hold-Timeout": {"5s"}, "X-Request-Id": {"kept"},
	}
	for _, path := range []string{"/v1/openai/chat/completions", "/v1/completions", "/v1/inference/alice/m"} {
		body := `{"model":"alice/m","messages":[],"prompt":"hi","input":"hi"}`
		if r := h.do(context.Background(), "alice", http.MethodPost, path, body, hdr); r.status != http.StatusOK {
			t.Fatalf("%s: %d %s", path, r.status, r.body)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 3 {
		t.Fatalf("model server saw %d requests, want 3", len(got))
	}
	for i, h := range got {
		for k := range h {
			if k == "Authorization" || strings.HasPrefix(k, "X-Thaw-") {
				t.Errorf("request %d reached the model server with %s", i, k)
			}
		}
	}
	if got[0].Get("X-Request-Id") != "kept" {
		t.Errorf("other headers are kept: X-Request-Id %q", got[0].Get("X-Request-Id"))
	}
}

// TestGrantScope: a request the edge authenticated by a grant (no token)
// is served on the grant's deployment only; another of the same user's
// deployments does not exist for it.
func TestGrantScope(t *testing.T) {
	up := newUpstream(t, nil)
	h := newHarness(t, Config{})
	h.res.targets["alice alice/other"] = Target{DeployID: "d3", Model: "alice/other", MaxBatchSize: 2}
	h.p.SetEndpoints("d1", 2, map[string]string{"i1": up.addr()})
	h.p.SetEndpoints("d3", 2, map[string]string{"i3": up.addr()})
	grants, _ := auth.NewGrants(auth.NewGrantKey())
	mux := http.NewServeMux()
	h.p.Register(mux, func(next http.Handler) http.Handler {
		return auth.NewUsers(map[string]string{"alice": "tok-alice"}).RequireOrGrant(grants, next)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	grant := grants.Issue("alice", "d1", time.Now())
	for _, tc := range []struct {
		model string
		want  int
	}{{"alice/m", 200}, {"deploy_id:d1", 200}, {"alice/other", 404}} {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/chat/completions", strings.NewReader(`{"model":"`+tc.model+`","messages":[]}`))
		req.Header.Set(routing.GrantHeader, grant)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s with a grant for d1: %d, want %d", tc.model, resp.StatusCode, tc.want)
		}
	}
}
