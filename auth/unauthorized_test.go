package auth

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestUnauthorizedDoesNotWaitForBody: a request without a valid token is
// answered 401 at once, though its body has barely started (a slow or
// never-finished upload must not hold the connection).
func TestUnauthorizedDoesNotWaitForBody(t *testing.T) {
	users := NewUsers(map[string]string{"alice": "tok-a"})
	srv := httptest.NewServer(users.Require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("handler reached without a valid token")
	})))
	defer srv.Close()
	for _, tc := range []struct{ name, auth, length string }{
		{"no token", "", "Content-Length: 1000"},
		{"bad token", "Authorization: Bearer nope\r\n", "Content-Length: 1000"},
		{"bad token, chunked", "Authorization: Bearer nope\r\n", "Transfer-Encoding: chunked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := io.WriteString(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"+tc.auth+tc.length+"\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer while the body is unfinished: %v", err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("status %d, want 401", resp.StatusCode)
			}
			if _, err := br.ReadByte(); err != io.EOF {
				t.Errorf("connection left open after the 401: %v", err)
			}
		})
	}
}
