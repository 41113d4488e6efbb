package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/thawhq/thaw/routing"
	"github.com/thawhq/thaw/sim"
	"github.com/thawhq/thaw/test/e2e"
)

// Helpers of the client-behaviour suite (clients_*_test.go): real clients
// that leave early, slow or idle connections, long holds; and what a model
// server received, read from the simulators' request log.

// caseHeader marks a request so that its line in the simulators' request
// log (thaw dev --sim-request-log) can be found.
const caseHeader = "X-E2e-Case"

// requestLog is the file thaw dev's simulators append a sim.RequestRecord
// to, one JSON line per inference request, when the request ends.
type requestLog string

// records returns the lines written so far; a line still being written is
// skipped.
func (l requestLog) records(t *testing.T) []sim.RequestRecord {
	t.Helper()
	b, err := os.ReadFile(string(l))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatalf("read the request log: %v", err)
	}
	var out []sim.RequestRecord
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		var r sim.RequestRecord
		if json.Unmarshal(line, &r) == nil {
			out = append(out, r)
		}
	}
	return out
}

// find returns the records of the requests marked mark.
func (l requestLog) find(t *testing.T, mark string) []sim.RequestRecord {
	t.Helper()
	var out []sim.RequestRecord
	for _, r := range l.records(t) {
		if r.Header.Get(caseHeader) == mark {
			out = append(out, r)
		}
	}
	return out
}

// wait returns the one record of the request marked mark, waiting up to
// timeout for the model server to end it; ok is false (and the test marked
// failed) when there is none or more than one.
func (l requestLog) wait(t *testing.T, mark string, timeout time.Duration) (sim.RequestRecord, bool) {
	t.Helper()
	var got []sim.RequestRecord
	waitFor(timeout, 50*time.Millisecond, func() bool {
		got = l.find(t, mark)
		return len(got) > 0
	})
	if len(got) != 1 {
		t.Errorf("request %s: %d records in the model servers' request log within %v, want 1: %+v\nthe log has:\n%s", mark, len(got), timeout, got, l.describe(t))
		return sim.RequestRecord{}, false
	}
	return got[0], true
}

// describe lists the records, one a line, for failure messages; the fleet's
// warm-ups (routing.WarmupHeader), which carry no mark, say so.
func (l requestLog) describe(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, r := range l.records(t) {
		fmt.Fprintf(&b, "%s %s mark=%q warmup=%v aborted=%v ran=%v\n", r.Start.Format("15:04:05.000"), r.Path, r.Header.Get(caseHeader),
			r.Header.Get(routing.WarmupHeader) == "1", r.Aborted, r.End.Sub(r.Start).Round(time.Millisecond))
	}
	return b.String()
}

// slotGauges returns the deployment's thaw_requests_inflight and
// thaw_requests_held from the operators' listener; ok is false when either
// series is missing.
func (p *thawProc) slotGauges(t *testing.T, deployID string) (inflight, held float64, ok bool) {
	t.Helper()
	var seen int
	for _, m := range p.scrape(t) {
		if m.Labels["deploy_id"] != deployID {
			continue
		}
		switch m.Name {
		case "thaw_requests_inflight":
			inflight, seen = m.Value, seen|1
		case "thaw_requests_held":
			held, seen = m.Value, seen|2
		}
	}
	return inflight, held, seen == 3
}

// waitSlots waits up to timeout until cond holds of the deployment's
// in-flight and held gauges, and reports whether it did; on failure the
// test is marked failed with the last values.
func (p *thawProc) waitSlots(t *testing.T, deployID, what string, timeout time.Duration, cond func(inflight, held float64) bool) bool {
	t.Helper()
	var inflight, held float64
	var ok bool
	if waitFor(timeout, 25*time.Millisecond, func() bool {
		inflight, held, ok = p.slotGauges(t, deployID)
		return ok && cond(inflight, held)
	}) {
		return true
	}
	if !ok {
		t.Errorf("%s: no thaw_requests_inflight and thaw_requests_held series for deploy_id %s on %s/metrics", what, deployID, p.Metrics)
		return false
	}
	t.Errorf("%s: thaw_requests_inflight %v, thaw_requests_held %v after %v", what, inflight, held, timeout)
	return false
}

// slotsFreed asserts what an operator sees once every client of a
// deployment has gone: nothing in flight, nothing held, within 2s.
func (p *thawProc) slotsFreed(t *testing.T, deployID, what string) bool {
	t.Helper()
	return p.waitSlots(t, deployID, what+": slots not given back", 2*time.Second, func(inflight, held float64) bool {
		return inflight == 0 && held == 0
	})
}

// untimedClient is httpClient without its 90s limit, for requests that
// are meant to take minutes; their context bounds them.
var untimedClient = &http.Client{Transport: httpClient.Transport}

// post sends a marked inference request as dev with ctx and returns the
// response with its body unread (the caller closes it). header holds
// extra header names and values, alternately. The response must come
// within httpClient's 90s: longer requests use postUntimed.
func (p *thawProc) post(ctx context.Context, path, mark string, body any, header ...string) (*http.Response, error) {
	return p.postWith(httpClient, ctx, path, mark, body, header...)
}

// postUntimed is post bounded by ctx only.
func (p *thawProc) postUntimed(ctx context.Context, path, mark string, body any, header ...string) (*http.Response, error) {
	return p.postWith(untimedClient, ctx, path, mark, body, header...)
}

func (p *thawProc) postWith(c *http.Client, ctx context.Context, path, mark string, body any, header ...string) (*http.Response, error) {
	j, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.Base+path, bytes.NewReader(j))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+devToken)
	if mark != "" {
		req.Header.Set(caseHeader, mark)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return c.Do(req)
}

// postRead is post with the answer read in full.
func (p *thawProc) postRead(ctx context.Context, path, mark string, body any, header ...string) (response, error) {
	resp, err := p.post(ctx, path, mark, body, header...)
	return readAll(resp, err)
}

// readAll is e2e.ReadAll: the answer of an http.Client's Do read in full,
// or err.
func readAll(resp *http.Response, err error) (response, error) {
	r, err := e2e.ReadAll(resp, err)
	return response(r), err
}

// eachEvent calls fn with the data of each `data:` line of the event
// stream r, trimmed, until r ends (nil) or fails (the error).
func eachEvent(r io.Reader, fn func(data string)) error {
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if data, ok := strings.CutPrefix(line, "data:"); ok {
			fn(strings.TrimSpace(data))
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// outcome is what a user saw of one request and how long it took.
type outcome struct {
	r    response
	err  error
	took time.Duration
}

// timed sends a request with send in a new goroutine and delivers its
// outcome.
func timed(send func() (response, error)) <-chan outcome {
	c := make(chan outcome, 1)
	go func() {
		start := time.Now()
		r, err := send()
		c <- outcome{r, err, time.Since(start)}
	}()
	return c
}

// readEvents reads n `data:` events of an event stream and returns them.
func readEvents(r *bufio.Reader, n int) ([]string, error) {
	var out []string
	for len(out) < n {
		line, err := r.ReadString('\n')
		if data, ok := strings.CutPrefix(line, "data:"); ok {
			out = append(out, strings.TrimSpace(data))
		}
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// completionReq is an OpenAI completion request.
func completionReq(model string, maxTokens int, stream bool) map[string]any {
	return map[string]any{"model": model, "prompt": "Once upon a time", "max_tokens": maxTokens, "stream": stream}
}

// nativeReq is a DeepInfra native inference request.
func nativeReq(maxTokens int) map[string]any {
	return map[string]any{"input": "Once upon a time", "max_new_tokens": maxTokens}
}

// unwedged asserts that 2*batch+1 concurrent requests, more than the
// deployment's instance can take at once, are all answered: no slot was
// left taken by a client that went away. Each is marked prefix-i.
func (p *thawProc) unwedged(t *testing.T, model string, batch int, prefix string) []string {
	t.Helper()
	n := 2*batch + 1
	marks := make([]string, n)
	out := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		marks[i] = fmt.Sprintf("%s-%d", prefix, i)
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			r, err := p.postRead(ctx, chatPath, marks[i], chatBody(model, 4, false))
			if err != nil {
				out[i] = err.Error()
				return
			}
			out[i] = checkChat(r, 4)
		})
	}
	wg.Wait()
	for i, msg := range out {
		if msg != "" {
			t.Errorf("%d requests after the clients left (max_batch_size %d): request %d: %s", n, batch, i, msg)
		}
	}
	return marks
}

// rawConn is a plain TCP connection to thaw's public listener, for clients
// that misbehave in ways net/http will not.
type rawConn struct {
	*net.TCPConn
	br *bufio.Reader
}

func (p *thawProc) dialRaw(t *testing.T) *rawConn {
	t.Helper()
	u, err := url.Parse(p.Base)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", u.Host, err)
	}
	t.Cleanup(func() { c.Close() })
	tc := c.(*net.TCPConn)
	return &rawConn{TCPConn: tc, br: bufio.NewReader(tc)}
}

// send writes s, failing the test on error.
func (c *rawConn) send(t *testing.T, s string) {
	t.Helper()
	if _, err := io.WriteString(c, s); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// reset closes the connection with a TCP RST instead of a FIN, as a killed
// client or a middlebox dropping the flow does.
func (c *rawConn) reset() {
	_ = c.SetLinger(0)
	_ = c.Close()
}

// untilClosed reads until the server closes the connection (EOF or reset)
// or limit passes, and returns what it read, how long that took, and
// whether the server closed it.
func (c *rawConn) untilClosed(limit time.Duration) (data []byte, took time.Duration, closed bool) {
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(limit))
	data, err := io.ReadAll(c.br)
	took = time.Since(start)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return data, took, false
	}
	return data, took, true
}

// requestHead is an HTTP/1.1 request head for path with the given header
// lines, ending with the blank line.
func requestHead(method, path string, lines ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: thaw\r\n", method, path)
	for _, l := range lines {
		b.WriteString(l + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// parseAnswer parses an HTTP response read off a raw connection; ok is
// false when data holds none.
func parseAnswer(data []byte) (*http.Response, bool) {
	if len(data) == 0 {
		return nil, false
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(data)), nil)
	if err != nil {
		return nil, false
	}
	return resp, true
}

// TestClientUpstreamHeaders: what reaches a model server, read from the
// simulators' request log, carries neither the caller's token nor any
// X-Thaw-* header: not thaw's own (X-Thaw-Hold-Timeout), and not one a
// client made up to look like thaw's routing (X-Thaw-Route,
// X-Thaw-Deploy-Id, X-Thaw-Grant); on chat, completions, native, streamed
// and not.
func TestClientUpstreamHeaders(t *testing.T) {
	log := requestLog(t.TempDir() + "/requests.jsonl")
	p := startThaw(t, thawOpts{SimRequestLog: string(log)})
	name := uniqueName("hdrs")
	d := p.create(t, devToken, llmRequest(name, "A100-80GB", 1, 8, 0, 1))
	model := "dev/" + name

	type tc struct {
		mark, path string
		body       any
		stream     bool
	}
	cases := []tc{
		{"chat", "/v1/openai/chat/completions", chatBody(model, 4, false), false},
		{"chat-stream", "/v1/openai/chat/completions", chatBody(model, 4, true), true},
		{"chat-by-id", "/v1/openai/chat/completions", chatBody("deploy_id:"+d.ID, 4, false), false},
		{"completions", "/v1/openai/completions", completionReq(model, 4, false), false},
		{"completions-stream", "/v1/openai/completions", completionReq(model, 4, true), true},
		{"native", "/v1/inference/" + model, nativeReq(4), false},
	}
	spoofed := []string{
		"X-Thaw-Route", "direct",
		"X-Thaw-Deploy-Id", d.ID,
		"X-Thaw-Grant", "made-up-grant",
	}
	for _, variant := range []struct {
		name   string
		header []string
	}{
		{"thaw's own header", []string{"X-Thaw-Hold-Timeout", "30s"}},
		{"client-made routing headers", spoofed},
	} {
		t.Run(variant.name, func(t *testing.T) {
			for _, c := range cases {
				mark := c.mark + "/" + variant.name
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				r, err := p.postRead(ctx, c.path, mark, c.body, variant.header...)
				cancel()
				if err != nil {
					t.Fatalf("%s: %v", mark, err)
				}
				if r.Status != http.StatusOK {
					t.Errorf("%s: %s", mark, r)
					continue
				}
				if c.stream && !bytes.Contains(r.Body, []byte("data: [DONE]")) {
					t.Errorf("%s: stream did not end with data: [DONE]: %s", mark, r)
				}
				rec, ok := log.wait(t, mark, 5*time.Second)
				if !ok {
					continue
				}
				for k, v := range rec.Header {
					if strings.EqualFold(k, "Authorization") || strings.HasPrefix(strings.ToLower(k), "x-thaw-") {
						t.Errorf("%s: the model server received %s: %q", mark, k, v)
					}
				}
			}
		})
	}
}
