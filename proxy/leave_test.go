package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// stage is when a client goes away.
type stage string

const (
	whileHeld       stage = "while held"              // no instance yet
	beforeFirstByte stage = "before the first byte"   // the model server has not answered
	midStream       stage = "mid-stream (SSE)"        // after headers, between events
	midBody         stage = "mid-body (not streamed)" // after headers, part of a JSON body
)

// leaveMarker is what the client reads before leaving after headers.
const leaveMarker = "first-part"

// leavingUpstream answers its first request as st says and then waits for
// the request to be cancelled, closing cancelled; later requests (and all,
// for whileHeld) get the default completion.
func leavingUpstream(t *testing.T, st stage) (up *upstream, arrived, cancelled chan struct{}) {
	arrived, cancelled = make(chan struct{}), make(chan struct{})
	var n atomic.Int32
	up = newUpstream(t, func(w http.ResponseWriter, r *http.Request, body map[string]any) {
		if st == whileHeld || n.Add(1) > 1 {
			defaultAnswer(w, r, body)
			return
		}
		switch st {
		case midStream:
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprintf(w, "data: {\"choices\":[{\"delta\":{\"content\":%q}}]}\n\n", leaveMarker)
			w.(http.Flusher).Flush()
		case midBody:
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"object":"text_completion","id":%q,"choices":[`, leaveMarker)
			w.(http.Flusher).Flush()
		}
		close(arrived)
		select {
		case <-r.Context().Done():
			close(cancelled)
		case <-time.After(10 * time.Second):
		}
	})
	return up, arrived, cancelled
}

// defaultAnswer is newUpstream's default completion, for handlers that
// answer some requests themselves.
func defaultAnswer(w http.ResponseWriter, r *http.Request, body map[string]any) {
	model, _ := body["model"].(string)
	w.Header().Set("Content-Type", "application/json")
	if r.URL.Path == "/v1/completions" {
		fmt.Fprintf(w, `{"object":"text_completion","model":%q,"choices":[{"index":0,"text":"hello world","finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}`, model)
		return
	}
	fmt.Fprintf(w, `{"object":"chat.completion","model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}`, model)
}

// client is a way of sending a request and going away.
type client struct {
	name string
	// leave sends body to path as alice, waits until ready returns (or,
	// when marker is set, until the response shows it), then goes away.
	leave func(t *testing.T, h *harness, path, body string, ready func(), marker string)
}

var leavingClients = []client{
	{"tcp close", func(t *testing.T, h *harness, path, body string, ready func(), marker string) {
		tcpLeave(t, h, path, body, ready, marker, false)
	}},
	{"tcp reset", func(t *testing.T, h *harness, path, body string, ready func(), marker string) {
		tcpLeave(t, h, path, body, ready, marker, true)
	}},
	{"http.Client cancel", httpLeave},
}

// tcpLeave writes the request on a raw connection and closes it, with a
// reset (SO_LINGER 0) when reset is set.
func tcpLeave(t *testing.T, h *harness, path, body string, ready func(), marker string, reset bool) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: thaw\r\nAuthorization: Bearer tok-alice\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", path, len(body), body)
	if marker != "" {
		_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		readUntil(t, conn, marker)
	} else {
		ready()
	}
	if reset {
		_ = conn.(*net.TCPConn).SetLinger(0)
	}
}

func httpLeave(t *testing.T, h *harness, path, body string, ready func(), marker string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, h.srv.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer tok-alice")
	done := make(chan struct{})
	var resp *http.Response
	go func() {
		defer close(done)
		var err error
		if resp, err = h.client.Do(req); err == nil && marker == "" {
			resp.Body.Close()
		}
	}()
	if marker == "" {
		ready()
		cancel()
		<-done
		return
	}
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("no response headers")
	}
	if resp == nil {
		t.Fatal("request failed before its headers")
	}
	defer resp.Body.Close()
	readUntil(t, resp.Body, marker)
}

// readUntil reads r until what it read contains marker.
func readUntil(t *testing.T, r io.Reader, marker string) {
	t.Helper()
	br := bufio.NewReader(r)
	var got strings.Builder
	for !strings.Contains(got.String(), marker) {
		b, err := br.ReadByte()
		if err != nil {
			t.Fatalf("read %q, then %v; want %q", got.String(), err, marker)
		}
		got.WriteByte(b)
	}
}

// TestClientLeaves: however and whenever a client goes away, its slot and
// its place in the queue are given back, the model server sees the request
// cancelled, demand goes back to zero, and the next request is served on
// the same single slot.
func TestClientLeaves(t *testing.T) {
	chat := func(model string, stream bool) string {
		return fmt.Sprintf(`{"model":%q,"stream":%v,"messages":[{"role":"user","content":"hi"}]}`, model, stream)
	}
	completion := func(model string, stream bool) string {
		return fmt.Sprintf(`{"model":%q,"stream":%v,"prompt":"hi"}`, model, stream)
	}
	type target struct {
		name, path string
		body       func(stream bool) string
	}
	var targets []target
	for _, model := range []string{"alice/m", "deploy_id:d1"} {
		targets = append(targets,
			target{"chat " + model, "/v1/openai/chat/completions", func(s bool) string { return chat(model, s) }},
			target{"completions " + model, "/v1/completions", func(s bool) string { return completion(model, s) }})
	}
	targets = append(targets, target{"native alice/m", "/v1/inference/alice/m", func(bool) string { return `{"input":"hi"}` }})

	for _, tg := range targets {
		native := strings.HasPrefix(tg.path, "/v1/inference/")
		for _, st := range []stage{whileHeld, beforeFirstByte, midStream, midBody} {
			if native && st == midStream {
				continue // the native path does not stream
			}
			for _, c := range leavingClients {
				t.Run(fmt.Sprintf("%s/%s/%s", tg.name, st, c.name), func(t *testing.T) {
					t.Parallel()
					testClientLeaves(t, tg.path, tg.body(st == midStream), st, native, c)
				})
			}
		}
	}
}

func testClientLeaves(t *testing.T, path, body string, st stage, native bool, c client) {
	logs := &logRecorder{}
	h := newHarness(t, Config{HoldTimeout: 2 * time.Second, Logger: slog.New(logs)})
	up, arrived, cancelled := leavingUpstream(t, st)
	if st != whileHeld {
		h.p.SetEndpoints("d1", 1, map[string]string{"i1": up.addr()})
	}
	ready := func() {
		if st == whileHeld {
			h.waitHeld("d1", 1)
			return
		}
		select {
		case <-arrived:
		case <-time.After(3 * time.Second):
			t.Fatal("the request never reached the model server")
		}
	}
	marker := ""
	if (st == midStream || st == midBody) && !native {
		marker = leaveMarker // the native path answers only once complete
	}
	c.leave(t, h, path, body, ready, marker)

	eventually(t, "held and in flight back to 0", func() bool { return h.p.Counts()["d1"] == (Load{}) })
	eventually(t, "no instance with a request in flight", func() bool { return len(h.p.InstanceInflight()) == 0 })
	eventually(t, "demand sink to see nothing held or in flight", func() bool { return h.sink.get("d1") == (Load{}) })
	eventually(t, "client left logged", func() bool { return logs.find("client left") != nil })
	if rec := logs.find("client left"); rec["level"] != "DEBUG" || rec["deploy"] != "d1" || rec["after"] == "" {
		t.Errorf("client left logged as %v, want DEBUG with deploy d1 and how long it ran", rec)
	}
	if st != whileHeld {
		select {
		case <-cancelled:
		case <-time.After(3 * time.Second):
			t.Error("the model server never saw the request cancelled")
		}
	} else {
		h.p.SetEndpoints("d1", 1, map[string]string{"i1": up.addr()})
	}
	if r := h.post(context.Background(), "alice", path, strings.Replace(body, `"stream":true`, `"stream":false`, 1)); r.err != nil || r.status != http.StatusOK {
		t.Errorf("next request on the one slot: %d %v %s", r.status, r.err, r.body)
	}
}
