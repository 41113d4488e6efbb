package auth

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRequire(t *testing.T) {
	users := NewUsers(map[string]string{"dev": "tok-dev", "alice": "tok-alice"})
	h := users.Require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("user=" + User(r.Context())))
	}))
	tests := []struct {
		name       string
		header     string // Authorization; "" sends none
		wantStatus int
		wantBody   string // for 200
		wantCode   string // error.code for 401
	}{
		{name: "missing header", wantStatus: 401, wantCode: "missing_token"},
		{name: "not bearer", header: "Basic dG9rLWRldg==", wantStatus: 401, wantCode: "missing_token"},
		{name: "empty bearer", header: "Bearer ", wantStatus: 401, wantCode: "missing_token"},
		{name: "wrong token", header: "Bearer nope", wantStatus: 401, wantCode: "invalid_token"},
		{name: "token of nobody but prefix of one", header: "Bearer tok-de", wantStatus: 401, wantCode: "invalid_token"},
		{name: "dev", header: "Bearer tok-dev", wantStatus: 200, wantBody: "user=dev"},
		{name: "alice", header: "Bearer tok-alice", wantStatus: 200, wantBody: "user=alice"},
		{name: "lower-case scheme", header: "bearer tok-alice", wantStatus: 200, wantBody: "user=alice"},
		{name: "extra space", header: "Bearer  tok-alice ", wantStatus: 200, wantBody: "user=alice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/deploy/list", nil)
			if tt.header != "" {
				req.Header.Set("Authorization", tt.header)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d; body %s", rec.Code, tt.wantStatus, rec.Body)
			}
			if tt.wantStatus == 200 {
				if got := rec.Body.String(); got != tt.wantBody {
					t.Errorf("body = %q, want %q", got, tt.wantBody)
				}
				return
			}
			var e struct {
				Error struct {
					Type, Code, Message string
				}
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
				t.Fatalf("error body %q: %v", rec.Body, err)
			}
			if diff := cmp.Diff([2]string{"authentication_error", tt.wantCode}, [2]string{e.Error.Type, e.Error.Code}); diff != "" {
				t.Errorf("error type, code (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLookup(t *testing.T) {
	users := NewUsers(map[string]string{"dev": "tok-dev"})
	tests := []struct {
		token  string
		want   string
		wantOK bool
	}{
		{"tok-dev", "dev", true},
		{"", "", false},
		{"tok-dev2", "", false},
	}
	for _, tt := range tests {
		user, ok := users.Lookup(tt.token)
		if diff := cmp.Diff([2]any{tt.want, tt.wantOK}, [2]any{user, ok}); diff != "" {
			t.Errorf("Lookup(%q) (-want +got):\n%s", tt.token, diff)
		}
	}
}

func TestWithUser(t *testing.T) {
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	if got := User(req.Context()); got != "" {
		t.Errorf("User of a bare context = %q, want empty", got)
	}
	if got := User(WithUser(req.Context(), "bob")); got != "bob" {
		t.Errorf("User = %q, want bob", got)
	}
}
