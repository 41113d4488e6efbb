package e2e

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestSend: what the server saw of a request Send made, and what Send
// read of the answer.
func TestSend(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Saw", r.Method+"|"+r.Header.Get("Content-Type")+"|"+r.Header.Get("Authorization")+"|"+r.Header.Get("X-Case"))
		w.WriteHeader(http.StatusTeapot)
		w.Write(append([]byte("body:"), b...))
	}))
	t.Cleanup(srv.Close)
	tests := []struct {
		name, method, token string
		body                []byte
		header              []string
		saw, answer         string
	}{
		{"JSON with a token and a header", http.MethodPost, "tok", []byte(`{"a":1}`), []string{"X-Case", "c1"},
			"POST|application/json|Bearer tok|c1", `body:{"a":1}`},
		{"no body, no token", http.MethodGet, "", nil, nil, "GET|||", "body:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := SendT(t, nil, tc.method, srv.URL+"/x", tc.token, tc.body, tc.header...)
			got := []string{r.Header.Get("X-Saw"), string(r.Body)}
			if r.Status != http.StatusTeapot {
				t.Errorf("status %d, want %d", r.Status, http.StatusTeapot)
			}
			if d := cmp.Diff([]string{tc.saw, tc.answer}, got); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
	if _, err := Send(t.Context(), nil, http.MethodGet, "http://127.0.0.1:1/", "", nil); err == nil {
		t.Error("Send to a closed port: no error")
	}
}
