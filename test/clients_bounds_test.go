package test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"
)

// TestClientConnectionBounds: with --body-timeout 2s and
// --conn-idle-timeout 3s, the public listener closes a connection whose
// request body stops short of its Content-Length, or whose chunked body is
// never terminated, about 2s after the headers (408 if it answers at all),
// and an idle keep-alive connection about 3s after its last answer; it
// answers a request without a valid token 401 at once, without waiting for
// its body. On the same server meanwhile, a body that arrives slowly but
// within the bound is served, and a request held 10s for a cold start and a
// 12s stream, both longer than either bound, are not cut.
func TestClientConnectionBounds(t *testing.T) {
	const bodyTimeout, idleTimeout = 2 * time.Second, 3 * time.Second
	p := startThaw(t, thawOpts{SimStartup: 10 * time.Second, TokensPerSecond: 20, BodyTimeout: bodyTimeout, ConnIdleTimeout: idleTimeout})
	name := uniqueName("bounds")
	p.create(t, devToken, llmRequest(name, "A100-80GB", 1, 8, 0, 1))
	model := "dev/" + name
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// In the background, all held for the 10s cold start: a plain request,
	// a 240-token stream (12s at 20 tokens/s once it starts), and a body
	// sent in two halves 1s apart.
	held := timed(func() (response, error) {
		return p.doCtx(ctx, http.MethodPost, chatPath, devToken, chatBody(model, 4, false))
	})
	type streamed struct {
		status int
		events []sseEvent
		err    error
	}
	stream := make(chan streamed, 1)
	go func() {
		resp, err := p.post(ctx, chatPath, "", chatBody(model, 240, true))
		if err != nil {
			stream <- streamed{err: err}
			return
		}
		defer resp.Body.Close()
		out := streamed{status: resp.StatusCode}
		out.err = eachEvent(resp.Body, func(data string) { out.events = append(out.events, sseEvent{data: data, at: time.Now()}) })
		stream <- out
	}()
	slow := make(chan outcome, 1)
	sc := p.dialRaw(t)
	go func() {
		start := time.Now()
		b, _ := json.Marshal(chatBody(model, 4, false))
		half := len(b) / 2
		_, err := io.WriteString(sc, requestHead(http.MethodPost, chatPath, "Authorization: Bearer "+devToken,
			"Content-Type: application/json", fmt.Sprintf("Content-Length: %d", len(b)))+string(b[:half]))
		if err == nil {
			time.Sleep(bodyTimeout / 2)
			_, err = sc.Write(b[half:])
		}
		if err != nil {
			slow <- outcome{err: err}
			return
		}
		_ = sc.SetReadDeadline(time.Now().Add(time.Minute))
		resp, err := http.ReadResponse(sc.br, nil)
		if err != nil {
			slow <- outcome{err: err, took: time.Since(start)}
			return
		}
		body, err := io.ReadAll(resp.Body)
		slow <- outcome{r: response{Status: resp.StatusCode, Header: resp.Header, Body: body}, err: err, took: time.Since(start)}
	}()

	auth := "Authorization: Bearer " + devToken
	partial := `{"model":"` + model + `","messages":[`
	t.Run("body shorter than its Content-Length", func(t *testing.T) {
		c := p.dialRaw(t)
		c.send(t, requestHead(http.MethodPost, chatPath, auth, "Content-Type: application/json", "Content-Length: 1000")+partial)
		checkCut(t, c, bodyTimeout)
	})
	t.Run("chunked body never terminated", func(t *testing.T) {
		c := p.dialRaw(t)
		c.send(t, requestHead(http.MethodPost, chatPath, auth, "Content-Type: application/json", "Transfer-Encoding: chunked")+
			fmt.Sprintf("%x\r\n%s\r\n", len(partial), partial))
		checkCut(t, c, bodyTimeout)
	})
	t.Run("idle keep-alive connection", func(t *testing.T) {
		c := p.dialRaw(t)
		c.send(t, requestHead(http.MethodGet, "/v1/openai/models", auth))
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(c.br, nil)
		if err != nil {
			t.Fatalf("GET /v1/openai/models: %v", err)
		}
		if _, err := io.ReadAll(resp.Body); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /v1/openai/models: HTTP %d, %v", resp.StatusCode, err)
		}
		data, took, closed := c.untilClosed(idleTimeout + 5*time.Second)
		switch {
		case !closed:
			t.Errorf("an idle keep-alive connection still open %v after its last answer (--conn-idle-timeout %v)", took, idleTimeout)
		case took < idleTimeout-500*time.Millisecond || took > idleTimeout+3*time.Second:
			t.Errorf("an idle keep-alive connection closed %v after its last answer, want about %v", took, idleTimeout)
		case len(data) > 0:
			t.Errorf("an idle connection got unasked-for bytes: %q", data)
		default:
			t.Logf("idle connection closed %v after its last answer", took)
		}
	})
	for _, tok := range []string{"", "Authorization: Bearer not-a-token"} {
		what := "no token"
		if tok != "" {
			what = "invalid token"
		}
		t.Run(what+", body unfinished", func(t *testing.T) {
			c := p.dialRaw(t)
			lines := []string{"Content-Type: application/json", "Content-Length: 100000"}
			if tok != "" {
				lines = append(lines, tok)
			}
			start := time.Now()
			c.send(t, requestHead(http.MethodPost, chatPath, lines...)+partial)
			_ = c.SetReadDeadline(start.Add(bodyTimeout + 5*time.Second))
			resp, err := http.ReadResponse(c.br, nil)
			took := time.Since(start)
			if err != nil {
				t.Fatalf("no answer after %v: %v", took, err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("HTTP %d after %v, want 401", resp.StatusCode, took)
			}
			if took > bodyTimeout/2 {
				t.Errorf("401 after %v: it waited for the body (--body-timeout %v) instead of answering at once", took, bodyTimeout)
			}
		})
	}

	longer := max(bodyTimeout, idleTimeout) + 2*time.Second
	select {
	case o := <-held:
		if o.err != nil {
			t.Errorf("a request held for the cold start was cut after %v: %v", o.took, o.err)
		} else if msg := checkChat(o.r, 4); msg != "" {
			t.Errorf("a request held for the cold start, answered after %v: %s", o.took, msg)
		} else if o.took < longer {
			t.Errorf("the held request was answered after %v: it did not wait longer than the bounds, the test proves nothing", o.took)
		} else {
			t.Logf("held request answered after %v", o.took)
		}
	case <-ctx.Done():
		t.Errorf("the held request: no answer within 2 minutes")
	}
	select {
	case s := <-stream:
		switch {
		case s.err != nil || s.status != http.StatusOK:
			t.Errorf("a 12s stream: HTTP %d, %d events, error %v", s.status, len(s.events), s.err)
		case len(s.events) == 0 || s.events[len(s.events)-1].data != "[DONE]":
			t.Errorf("a 12s stream was cut: %d events, not ending with [DONE]", len(s.events))
		default:
			span := s.events[len(s.events)-1].at.Sub(s.events[0].at)
			t.Logf("stream of %d events over %v", len(s.events), span)
			if span < longer {
				t.Errorf("the stream lasted %v: not longer than the bounds, the test proves nothing", span)
			}
		}
	case <-ctx.Done():
		t.Errorf("the stream did not end within 2 minutes")
	}
	select {
	case o := <-slow:
		if o.err != nil {
			t.Errorf("a body sent in two halves %v apart (within --body-timeout %v): %v after %v", bodyTimeout/2, bodyTimeout, o.err, o.took)
		} else if msg := checkChat(o.r, 4); msg != "" {
			t.Errorf("a body sent in two halves %v apart (within --body-timeout %v): %s", bodyTimeout/2, bodyTimeout, msg)
		}
	case <-ctx.Done():
		t.Errorf("the slow body's request: no answer within 2 minutes")
	}
}

// checkCut asserts that the server closes c, whose request body will never
// be complete, about bound after the headers, answering 408 if anything.
func checkCut(t *testing.T, c *rawConn, bound time.Duration) {
	t.Helper()
	data, took, closed := c.untilClosed(bound + 5*time.Second)
	if !closed {
		t.Fatalf("connection still open %v after a body that never completes (--body-timeout %v); read %q", took, bound, data)
	}
	if took < bound-500*time.Millisecond || took > bound+3*time.Second {
		t.Errorf("connection closed %v after the headers, want about the body timeout %v", took, bound)
	}
	if len(data) == 0 {
		t.Logf("connection closed after %v without an answer", took)
		return
	}
	resp, ok := parseAnswer(data)
	if !ok {
		t.Errorf("connection closed after %v with bytes that are no HTTP answer: %q", took, data)
		return
	}
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Errorf("answered HTTP %d after %v, want 408: %q", resp.StatusCode, took, data)
	} else {
		t.Logf("408 and closed after %v", took)
	}
}
