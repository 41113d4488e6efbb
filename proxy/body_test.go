package proxy

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// failingBody returns some bytes, then err.
type failingBody struct {
	data string
	err  error
}

func (b *failingBody) Read(p []byte) (int, error) {
	if b.data == "" {
		return 0, b.err
	}
	n := copy(p, b.data)
	b.data = b.data[n:]
	return n, nil
}

// TestReadBody: a body that cannot be read is answered in thaw's shape
// without the connection's addresses or OS error.
func TestReadBody(t *testing.T) {
	reset := &net.OpError{Op: "read", Net: "tcp",
		Source: &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 8080},
		Addr:   &net.TCPAddr{IP: net.IPv4(10, 9, 9, 9), Port: 51234},
		Err:    os.NewSyscallError("read", errors.New("connection reset by peer"))}
	tests := []struct {
		name       string
		body       io.Reader
		wantStatus int
		wantCode   string
	}{
		{"whole", strings.NewReader(`{"model":"a/b"}`), 0, ""},
		{"over MaxBody", strings.NewReader(strings.Repeat("x", 65)), 413, "body_too_large"},
		{"body deadline passed", &failingBody{`{"model":`, os.ErrDeadlineExceeded}, 408, "body_timeout"},
		{"connection reset", &failingBody{`{"model":`, reset}, 400, "bad_body"},
	}
	p, err := New(Config{Resolver: &fakeResolver{}, Demand: &fakeSink{}, MaxBody: 64, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, herr := p.readBody(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/v1/completions", tt.body))
			var got [2]any
			if herr != nil {
				got = [2]any{herr.Status, herr.Code}
				for _, leak := range []string{"10.1.2.3", "10.9.9.9", "reset", "read tcp", "deadline"} {
					if strings.Contains(herr.Message, leak) {
						t.Errorf("message %q shows %q", herr.Message, leak)
					}
				}
			} else {
				got = [2]any{0, ""}
			}
			if diff := cmp.Diff([2]any{tt.wantStatus, tt.wantCode}, got); diff != "" {
				t.Errorf("[status code] (-want +got):\n%s", diff)
			}
		})
	}
}
