package httpserve

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// These tests use real sockets and short real limits: read deadlines are
// the kernel's, which testing/synctest cannot step.
const (
	body = 300 * time.Millisecond
	idle = 400 * time.Millisecond
)

// start serves h with short limits and returns its address.
func start(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, Config{HeaderTimeout: time.Second, BodyTimeout: body, IdleTimeout: idle, ShutdownGrace: time.Second}, ln, h)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// echo reads the whole body and answers 200 with its length, or 408 when
// the body deadline passed.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if IsTimeout(err) {
		w.Header().Set("Connection", "close")
		http.Error(w, "body too slow", http.StatusRequestTimeout)
		return
	}
	if err != nil {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	fmt.Fprintf(w, "%d", len(b))
})

// closedWithin reads from conn until it is closed by the server and returns
// what was read; it fails if that takes longer than max.
func closedWithin(t *testing.T, conn net.Conn, max time.Duration) string {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(max))
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("connection still open after %s (read %q): %v", max, got, err)
	}
	return string(got)
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestSlowBodiesAreCut(t *testing.T) {
	for name, req := range map[string]string{
		"content-length, body never finished": "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"model\":",
		"chunked, never terminated":           "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"mod\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			addr := start(t, echo)
			c := dial(t, addr)
			if _, err := io.WriteString(c, req); err != nil {
				t.Fatal(err)
			}
			got := closedWithin(t, c, body+2*time.Second)
			if !strings.HasPrefix(got, "HTTP/1.1 408") {
				t.Errorf("answer to a body that never arrives: %q, want 408", got)
			}
		})
	}
}

func TestIdleKeepAliveIsClosed(t *testing.T) {
	addr := start(t, echo)
	c := dial(t, addr)
	if _, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	closedWithin(t, c, idle+2*time.Second)
}

// TestUnreadBodyDoesNotDelayAnswer: a handler that answers without reading
// the body (a 401) and says Connection: close is answered at once, whatever
// the client still has to send.
func TestUnreadBodyDoesNotDelayAnswer(t *testing.T) {
	addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		http.Error(w, "no token", http.StatusUnauthorized)
	}))
	c := dial(t, addr)
	if _, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(body / 2))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer before the body deadline: %v", err)
	}
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("status %d, want 401", resp.StatusCode)
	}
}

// TestHeldAndStreamingRequestsAreNotCut: once the body is in, a request may
// wait and stream far longer than the body and idle limits, and its context
// stays alive.
func TestHeldAndStreamingRequestsAreNotCut(t *testing.T) {
	const hold, stream = 3 * idle, 3 * idle
	addr := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			t.Errorf("read body: %v", err)
		}
		// Real time on purpose: the limits under test are read and write
		// deadlines on real sockets, which the kernel enforces, so the
		// handler must really outlast them (no synctest bubble holds a
		// socket).
		select { // held, silent
		case <-time.After(hold):
		case <-r.Context().Done():
			t.Errorf("request context ended while held: %v", context.Cause(r.Context()))
			return
		}
		f := http.NewResponseController(w)
		for i := range 6 {
			fmt.Fprintf(w, "data: %d\n\n", i)
			_ = f.Flush()
			time.Sleep(stream / 6)
		}
		if err := r.Context().Err(); err != nil {
			t.Errorf("request context ended while streaming: %v", err)
		}
	}))
	for _, proto := range []string{"http1", "h2c"} {
		t.Run(proto, func(t *testing.T) {
			tr := &http.Transport{}
			if proto == "h2c" {
				tr.Protocols = new(http.Protocols)
				tr.Protocols.SetUnencryptedHTTP2(true)
			}
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr}).Post("http://"+addr+"/", "application/json", strings.NewReader(`{"model":"m"}`))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			got, err := io.ReadAll(resp.Body)
			if err != nil || !strings.Contains(string(got), "data: 5") {
				t.Errorf("stream cut: %q, %v", got, err)
			}
			if resp.ProtoMajor != map[string]int{"http1": 1, "h2c": 2}[proto] {
				t.Errorf("spoke %s", resp.Proto)
			}
		})
	}
}

// TestSlowBodyOverH2C: the body bound holds for one HTTP/2 stream too.
func TestSlowBodyOverH2C(t *testing.T) {
	addr := start(t, echo)
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	pr, pw := io.Pipe()
	defer pw.Close()
	go func() { _, _ = pw.Write([]byte(`{"model":`)) }() // and never more
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/", pr)
	ctx, cancel := context.WithTimeout(context.Background(), body+3*time.Second)
	defer cancel()
	resp, err := (&http.Client{Transport: tr}).Do(req.WithContext(ctx))
	if err != nil {
		t.Fatalf("no answer to a stalled h2c body: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Errorf("status %d, want 408", resp.StatusCode)
	}
}
