package auth

import (
	"github.com/thawhq/thaw/routing"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestGrants(t *testing.T) {
	g, err := NewGrants(NewGrantKey())
	if err != nil {
		t.Fatal(err)
	}
	other, _ := NewGrants(NewGrantKey())
	now := time.Unix(1_800_000_000, 0)
	grant := g.Issue("alice", "d-123", now)
	if u, d, ok := g.Verify(grant, now.Add(GrantTTL)); !ok || u != "alice" || d != "d-123" {
		t.Errorf("Verify(fresh grant) = %q, %q, %v; want alice, d-123, true", u, d, ok)
	}
	body, mac, _ := strings.Cut(grant, ".")
	for name, bad := range map[string]string{
		"expired":       grant,
		"other key":     other.Issue("alice", "d-123", now),
		"tampered user": "Ym9i" + grant[len("YWxpY2U"):],
		"no mac":        body,
		"empty":         "",
		"garbage":       "a.b.c.d.e",
		"mac only":      mac,
	} {
		at := now
		if name == "expired" {
			at = now.Add(GrantTTL + 2*time.Second)
		}
		if u, d, ok := g.Verify(bad, at); ok {
			t.Errorf("%s: Verify accepted %q as %s on %s", name, bad, u, d)
		}
	}
	if _, err := NewGrants([]byte("short")); err == nil {
		t.Error("NewGrants accepted a 5-byte key")
	}
}

func TestRequireOrGrant(t *testing.T) {
	users := NewUsers(map[string]string{"alice": "tok-a"})
	g, _ := NewGrants(NewGrantKey())
	type seen struct {
		user, scope string
		scoped      bool
		grantHeader string
	}
	var got seen
	h := users.RequireOrGrant(g, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, ok := Scope(r.Context())
		got = seen{User(r.Context()), s, ok, r.Header.Get(routing.GrantHeader)}
	}))
	for _, tc := range []struct {
		name, auth, grant string
		status            int
		want              seen
	}{
		{"token", "Bearer tok-a", "", 200, seen{user: "alice"}},
		{"grant", "", g.Issue("alice", "d-1", time.Now()), 200, seen{user: "alice", scope: "d-1", scoped: true}},
		{"token wins over a grant", "Bearer tok-a", g.Issue("bob", "d-2", time.Now()), 200, seen{user: "alice"}},
		{"forged grant", "", "YWxpY2U.ZC0x.9999999999.AAAA", 401, seen{}},
		{"expired grant", "", g.Issue("alice", "d-1", time.Now().Add(-2*GrantTTL)), 401, seen{}},
		{"nothing", "", "", 401, seen{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got = seen{}
			req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			if tc.grant != "" {
				req.Header.Set(routing.GrantHeader, tc.grant)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.status || got != tc.want {
				t.Errorf("status %d, handler saw %+v; want %d, %+v", rec.Code, got, tc.status, tc.want)
			}
		})
	}
}
