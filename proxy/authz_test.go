package proxy

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/auth"
	"github.com/thawhq/thaw/routing"
)

// authzAnswer is what Envoy sees from /authz.
type authzAnswer struct {
	Status   int
	DeployID string
	Route    string
	Code     string // OpenAI error code of a denial
}

func TestAuthz(t *testing.T) {
	h := newHarness(t, Config{MaxBody: 1 << 20})
	h.p.SetEndpoints("d1", 8, map[string]string{"i1": "127.0.0.1:1"}) // warm: may go direct
	users := auth.NewUsers(map[string]string{"alice": "tok-alice", "bob": "tok-bob"})
	grants, _ := auth.NewGrants(auth.NewGrantKey())
	srv := httptest.NewServer(h.p.Authz(users, grants))
	t.Cleanup(srv.Close)

	big := `{"messages":[{"role":"user","content":"` + strings.Repeat("x", 100) + `"}],"model":"alice/m"}`
	tests := []struct {
		name, method, path, token, body string
		partial                         bool
		want                            authzAnswer
	}{
		{"canonical name goes direct", "POST", "/v1/chat/completions", "tok-alice", `{"model":"alice/m","messages":[]}`, false,
			authzAnswer{200, "d1", "direct", ""}},
		{"openai prefix goes direct", "POST", "/v1/openai/completions", "tok-alice", `{"model":"alice/m","prompt":"hi"}`, false,
			authzAnswer{200, "d1", "direct", ""}},
		{"deploy_id form goes through the activator", "POST", "/v1/openai/chat/completions", "tok-alice", `{"model":"deploy_id:d1"}`, false,
			authzAnswer{200, "d1", "activator", ""}},
		{"native path goes through the activator", "POST", "/v1/inference/alice/m", "tok-alice", `{"input":"hi"}`, false,
			authzAnswer{200, "d1", "activator", ""}},
		{"no token", "POST", "/v1/chat/completions", "", `{"model":"alice/m"}`, false,
			authzAnswer{401, "", "", "missing_token"}},
		{"bad token", "POST", "/v1/chat/completions", "nope", `{"model":"alice/m"}`, false,
			authzAnswer{401, "", "", "invalid_token"}},
		{"another user's model does not exist", "POST", "/v1/chat/completions", "tok-bob", `{"model":"alice/m"}`, false,
			authzAnswer{404, "", "", "model_not_found"}},
		{"another user's model on the native path", "POST", "/v1/inference/alice/m", "tok-bob", `{"input":"hi"}`, false,
			authzAnswer{404, "", "", "model_not_found"}},
		{"unknown model", "POST", "/v1/completions", "tok-alice", `{"model":"alice/nope"}`, false,
			authzAnswer{404, "", "", "model_not_found"}},
		{"missing model", "POST", "/v1/completions", "tok-alice", `{"prompt":"hi"}`, false,
			authzAnswer{400, "", "", "missing_model"}},
		{"model not a string", "POST", "/v1/completions", "tok-alice", `{"model":3}`, false,
			authzAnswer{400, "", "", "missing_model"}},
		{"invalid json", "POST", "/v1/completions", "tok-alice", `{"model":"alice/m"`, false,
			authzAnswer{400, "", "", "invalid_json"}},
		{"cut body with the model in it", "POST", "/v1/chat/completions", "tok-alice", `{"model":"alice/m","messages":[{"role":"us`, true,
			authzAnswer{200, "d1", "direct", ""}},
		{"cut body without the model: the activator decides", "POST", "/v1/chat/completions", "tok-alice", big[:60], true,
			authzAnswer{200, "-", "activator", ""}},
		{"model after a long field", "POST", "/v1/chat/completions", "tok-alice", big, false,
			authzAnswer{200, "d1", "direct", ""}},
		{"other paths are thaw's", "GET", "/v1/models", "tok-alice", ``, false,
			authzAnswer{200, "-", "activator", ""}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, srv.URL+routing.AuthzPrefix+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			if tc.partial {
				req.Header.Set(routing.PartialBodyHeader, "true")
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			got := authzAnswer{Status: resp.StatusCode, DeployID: resp.Header.Get(routing.DeployIDHeader), Route: resp.Header.Get(routing.RouteHeader)}
			// A direct answer carries a grant for this caller on this
			// deployment (the direct route removes the token); no other
			// answer carries one.
			grant := resp.Header.Get(routing.GrantHeader)
			if got.Route == routing.Direct {
				if u, d, ok := grants.Verify(grant, time.Now()); !ok || u != "alice" || d != got.DeployID {
					t.Errorf("direct answer's grant %q: %q on %q, valid %v; want alice on %s", grant, u, d, ok, got.DeployID)
				}
			} else if grant != "" {
				t.Errorf("a %q answer carries a grant", got.Route)
			}
			if resp.StatusCode != http.StatusOK {
				var e struct {
					Error struct{ Code, Message string }
				}
				if err := json.Unmarshal(b, &e); err != nil {
					t.Fatalf("denial is not OpenAI-shaped JSON: %q", b)
				}
				if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
					t.Errorf("Content-Type = %q", ct)
				}
				got.Code = e.Error.Code
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("answer (-want +got):\n%s", diff)
			}
		})
	}
}

// TestAuthzColdGoesToActivator: with no ready instance, requests take the
// activator route (held there, retried on another replica if one dies).
func TestAuthzColdGoesToActivator(t *testing.T) {
	h := newHarness(t, Config{})
	srv := httptest.NewServer(h.p.Authz(auth.NewUsers(map[string]string{"alice": "tok-alice"}), nil))
	t.Cleanup(srv.Close)
	req, _ := http.NewRequest(http.MethodPost, srv.URL+routing.AuthzPrefix+"/v1/chat/completions", strings.NewReader(`{"model":"alice/m"}`))
	req.Header.Set("Authorization", "Bearer tok-alice")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get(routing.RouteHeader); resp.StatusCode != http.StatusOK || got != routing.Activator {
		t.Errorf("cold deployment: %d, route %q; want 200, %q", resp.StatusCode, got, routing.Activator)
	}
}

func TestModelField(t *testing.T) {
	type out struct {
		Model           string
		Found, Complete bool
	}
	tests := []struct {
		body string
		want out
	}{
		{`{"model":"a/b"}`, out{"a/b", true, true}},
		{`{"x":{"model":"no"},"model":"a/b"}`, out{"a/b", true, true}},
		{`{"model":"a/b","model":"c/d"}`, out{"c/d", true, true}},
		{`{"model":"a/b","messages":[`, out{"a/b", true, false}},
		{`{"messages":[`, out{"", false, false}},
		{`{"model":"a/b"} x`, out{"a/b", true, false}},
		{`[]`, out{"", false, false}},
		{``, out{"", false, false}},
	}
	for _, tc := range tests {
		m, f, c := modelField([]byte(tc.body))
		if diff := cmp.Diff(tc.want, out{m, f, c}); diff != "" {
			t.Errorf("modelField(%q) (-want +got):\n%s", tc.body, diff)
		}
	}
}
