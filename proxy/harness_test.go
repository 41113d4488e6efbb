package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/thawhq/thaw/auth"
	"github.com/thawhq/thaw/internal/openaitest"
	"github.com/thawhq/thaw/internal/polltest"
)

// fakeResolver resolves "<user> <model>" keys to targets.
type fakeResolver struct {
	mu      sync.Mutex // mu guards targets and models.
	targets map[string]Target
	models  map[string][]Model
}

func (r *fakeResolver) Resolve(user, model string) (Target, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.targets[user+" "+model]
	if !ok {
		return Target{}, fmt.Errorf("%w: %s", ErrUnknownModel, model)
	}
	return t, nil
}

func (r *fakeResolver) Models(user string) []Model {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.models[user]
}

// fakeSink records the demand the activator reports.
type fakeSink struct {
	mu    sync.Mutex // mu guards last and wakes.
	last  map[string]Load
	wakes []string
}

func (s *fakeSink) Set(id string, held, inflight int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last[id] = Load{Held: held, InFlight: inflight}
}

func (s *fakeSink) Wake(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.wakes = append(s.wakes, id)
}

func (s *fakeSink) get(id string) Load {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last[id]
}

func (s *fakeSink) woken(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, w := range s.wakes {
		if w == id {
			n++
		}
	}
	return n
}

// seen is one request a fake model server received.
type seen struct {
	Path  string
	Auth  string
	Model string
	Body  map[string]any
}

// upstream is a fake model server. handle, when set, answers instead of the
// default completion.
type upstream struct {
	srv    *httptest.Server
	mu     sync.Mutex // mu guards reqs.
	reqs   []seen
	handle func(w http.ResponseWriter, r *http.Request, body map[string]any)
}

// hangUp closes the connection under w without an answer, as a model
// server that dies mid-request; reset sends a TCP reset (linger 0)
// instead of a clean close.
func hangUp(w http.ResponseWriter, reset bool) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	if reset {
		conn.(*net.TCPConn).SetLinger(0)
	}
	conn.Close()
}

func newUpstream(t *testing.T, handle func(w http.ResponseWriter, r *http.Request, body map[string]any)) *upstream {
	t.Helper()
	u := &upstream{handle: handle}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		b, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(b, &body)
		model, _ := body["model"].(string)
		u.mu.Lock()
		u.reqs = append(u.reqs, seen{Path: r.URL.Path, Auth: r.Header.Get("Authorization"), Model: model, Body: body})
		u.mu.Unlock()
		if u.handle != nil {
			u.handle(w, r, body)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/v1/completions" {
			fmt.Fprintf(w, `{"object":"text_completion","model":%q,"choices":[{"index":0,"text":"hello world","finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}`, model)
			return
		}
		fmt.Fprintf(w, `{"object":"chat.completion","model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}`, model)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) addr() string { return strings.TrimPrefix(u.srv.URL, "http://") }

func (u *upstream) seen() []seen {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seen(nil), u.reqs...)
}

type harness struct {
	t      *testing.T
	p      *Proxy
	sink   *fakeSink
	res    *fakeResolver
	srv    *httptest.Server
	client *http.Client
}

// newHarness serves a Proxy behind real token auth: alice (tok-alice) owns
// alice/m (deploy d1), bob (tok-bob) owns bob/m (d2).
func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	h := &harness{
		t:    t,
		sink: &fakeSink{last: map[string]Load{}},
		res: &fakeResolver{
			targets: map[string]Target{
				"alice alice/m":      {DeployID: "d1", Model: "alice/m", MaxBatchSize: 2},
				"alice deploy_id:d1": {DeployID: "d1", Model: "alice/m", MaxBatchSize: 2},
				"bob bob/m":          {DeployID: "d2", Model: "bob/m", MaxBatchSize: 2},
			},
			models: map[string][]Model{
				"alice": {{ID: "alice/m", Owner: "alice", Created: time.Unix(1700000000, 0)}},
			},
		},
	}
	cfg.Resolver, cfg.Demand = h.res, h.sink
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.p = p
	users := auth.NewUsers(map[string]string{"alice": "tok-alice", "bob": "tok-bob"})
	mux := http.NewServeMux()
	p.Register(mux, users.Require)
	h.srv = httptest.NewServer(mux)
	t.Cleanup(h.srv.Close)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	h.client = &http.Client{Transport: tr, Timeout: 20 * time.Second}
	return h
}

// result is what a client saw.
type result struct {
	status int
	header http.Header
	body   string
	err    error
}

// post sends body to path as user ("" = no token).
func (h *harness) post(ctx context.Context, user, path, body string) result {
	return h.do(ctx, user, http.MethodPost, path, body, nil)
}

// do sends a request with header (may be nil) as user ("" = no token).
func (h *harness) do(ctx context.Context, user, method, path, body string, header http.Header) result {
	req, err := http.NewRequestWithContext(ctx, method, h.srv.URL+path, strings.NewReader(body))
	if err != nil {
		return result{err: err}
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if user != "" {
		req.Header.Set("Authorization", "Bearer tok-"+user)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.client.Do(req)
	if err != nil {
		return result{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return result{status: resp.StatusCode, header: resp.Header, body: string(b), err: err}
}

// postAsync sends in the background; the result arrives on the channel.
func (h *harness) postAsync(ctx context.Context, user, path, body string) <-chan result {
	ch := make(chan result, 1)
	go func() { ch <- h.post(ctx, user, path, body) }()
	return ch
}

// holdChats sends n chat completions for alice's d1 and waits until all n
// are held.
func (h *harness) holdChats(n int) []<-chan result {
	h.t.Helper()
	var held []<-chan result
	for range n {
		held = append(held, h.postAsync(context.Background(), "alice", "/v1/openai/chat/completions", chatBody))
	}
	h.waitHeld("d1", n)
	return held
}

// wait returns the result from ch, failing after d.
func wait(t *testing.T, ch <-chan result, d time.Duration) result {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("request: %v", r.err)
		}
		return r
	case <-time.After(d):
		t.Fatalf("no response within %s", d)
		return result{}
	}
}

// eventually polls cond until it holds, failing after 3s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	polltest.Eventually(t, 3*time.Second, time.Millisecond, what, cond)
}

// waitHeld waits until the deployment holds n requests.
func (h *harness) waitHeld(id string, n int) {
	h.t.Helper()
	eventually(h.t, fmt.Sprintf("%d held requests for %s", n, id), func() bool { return h.p.Counts()[id].Held == n })
}

// apiErr is the OpenAI error envelope.
type apiErr struct {
	Status     int
	Type, Code string
	Param      *string
	RetryAfter string
}

func errOf(t *testing.T, r result) (apiErr, string) {
	t.Helper()
	e, err := openaitest.DecodeError([]byte(r.body))
	if err != nil {
		t.Fatalf("status %d: not an OpenAI error: %q (%v)", r.status, r.body, err)
	}
	return apiErr{Status: r.status, Type: e.Type, Code: e.Code, Param: e.Param, RetryAfter: r.header.Get("Retry-After")}, e.Message
}

func strp(s string) *string { return &s }

const chatBody = `{"model":"alice/m","messages":[{"role":"user","content":"hi"}]}`

// logRecorder is a slog.Handler that keeps the messages and attributes
// logged, at every level.
type logRecorder struct {
	mu   sync.Mutex // mu guards recs.
	recs []map[string]string
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	rec := map[string]string{"msg": r.Message, "level": r.Level.String()}
	r.Attrs(func(a slog.Attr) bool {
		rec[a.Key] = a.Value.String()
		return true
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, rec)
	return nil
}

func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

// find returns the first record with message msg, or nil.
func (l *logRecorder) find(msg string) map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.recs {
		if r["msg"] == msg {
			return r
		}
	}
	return nil
}
