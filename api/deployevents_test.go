package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/internal/bubbletest"
	"github.com/thawhq/thaw/internal/metertest"
	"github.com/thawhq/thaw/meter"
)

// ledgerJournal is the Journal over a real ledger, writing at once (the
// meter's Journal writes in the background; its own tests cover that).
type ledgerJournal struct {
	*meter.Store
	t testing.TB
}

func (j ledgerJournal) Record(e meter.Event) {
	if err := j.AddJournalEvent(context.Background(), e); err != nil {
		j.t.Errorf("record %s: %v", e.Type, err)
	}
}

// fakeInstances lists fixed instances per deployment.
type fakeInstances map[string][]InstanceView

func (f fakeInstances) Instances(id string) []InstanceView { return f[id] }

// journalHarness serves the API with a journal over a real ledger.
type journalHarness struct {
	*harness
	ledger *meter.Store
}

func newJournalHarness(t *testing.T, inst InstanceLister) *journalHarness {
	t.Helper()
	store, ledger := metertest.Open(t)
	var mu sync.Mutex
	now := meterNow
	h := startHarness(t, Config{Store: store, Journal: ledgerJournal{ledger, t}, Instances: inst,
		Now: func() time.Time {
			mu.Lock()
			defer mu.Unlock()
			now = now.Add(time.Second)
			return now
		}})
	return &journalHarness{harness: h, ledger: ledger}
}

// events decodes GET /deploy/{id}/events' body, failing unless 200.
func (r response) events(t *testing.T) []meter.Event {
	t.Helper()
	v := decodeOK[EventsView](t, r)
	if v.Events == nil {
		t.Fatalf("events %s: must be a list", r.body)
	}
	return v.Events
}

// brief is what the tests compare of an event.
type brief struct{ Type, Message, Detail string }

func briefs(evs []meter.Event) []brief {
	out := []brief{}
	for _, e := range evs {
		var detail bytes.Buffer
		if len(e.Detail) > 0 {
			json.Compact(&detail, e.Detail)
		}
		out = append(out, brief{e.Type, e.Message, detail.String()})
	}
	return out
}

// TestDeployEventsJSON: creating, updating and deleting a deployment are
// its first events, with ids that order them; another user's deployment is
// not found.
func TestDeployEventsJSON(t *testing.T) {
	h := newJournalHarness(t, nil)
	v := h.create("alice", "m")
	h.do("alice", http.MethodPut, "/deploy/"+v.ID, map[string]any{"settings": map[string]any{"min_instances": 1, "max_instances": 3}}).view(t)
	evs := h.do("alice", http.MethodGet, "/deploy/"+v.ID+"/events", nil).events(t)
	want := []brief{
		{meter.EventDeploymentCreated, "deployment alice/m created: 1 x A100-80GB per instance, min 0, max 2 instances", `{"min_instances":0,"max_instances":2}`},
		{meter.EventDeploymentUpdated, "settings changed: min instances 0 -> 1, max instances 2 -> 3", `{"min_instances":1,"max_instances":3}`},
	}
	if d := cmp.Diff(want, briefs(evs)); d != "" {
		t.Errorf("events (-want +got):\n%s", d)
	}
	for i, e := range evs {
		if e.ID == "" || e.DeployID != v.ID || e.At.IsZero() || i > 0 && e.ID <= evs[i-1].ID {
			t.Errorf("event %d: id %q, deploy_id %q, at %v: want increasing ids and the deployment", i, e.ID, e.DeployID, e.At)
		}
	}

	for _, path := range []string{"/deploy/" + v.ID + "/events", "/deploy/" + v.ID + "/events?stream=1"} {
		e := h.do("bob", http.MethodGet, path, nil).err(t)
		if e.Status != http.StatusNotFound || e.Code != "deployment_not_found" {
			t.Errorf("bob GET %s: %+v, want 404 deployment_not_found", path, e)
		}
	}
	if e := h.do("alice", http.MethodGet, "/deploy/nope/events", nil).err(t); e.Status != http.StatusNotFound {
		t.Errorf("missing deployment: %+v, want 404", e)
	}
	if r := h.do("", http.MethodGet, "/deploy/"+v.ID+"/events", nil); r.status != http.StatusUnauthorized {
		t.Errorf("no token: status %d, want 401", r.status)
	}

	h.do("alice", http.MethodDelete, "/deploy/"+v.ID, nil).view(t)
	left, err := h.ledger.DeployEvents(context.Background(), meter.EventQuery{Owner: "alice", DeployID: v.ID, Since: meterNow, Limit: 10})
	if err != nil || len(left) != 3 || left[2].Type != meter.EventDeploymentDeleted || left[2].Message != "deployment alice/m deleted" {
		t.Errorf("after DELETE the journal has %v (%v), want a third event, deployment.deleted", briefs(left), err)
	}
}

// TestDeployEventsQuery: since, limit and after select the events; bad
// values are 400 with the parameter named.
func TestDeployEventsQuery(t *testing.T) {
	h := newJournalHarness(t, nil)
	v := h.create("alice", "m")
	base := meterNow.Add(time.Hour)
	for i := range 5 {
		h.ledger.AddJournalEvent(context.Background(), meter.Event{Owner: "alice", DeployID: v.ID,
			At: base.Add(time.Duration(i) * time.Minute), Type: meter.EventScale, Message: fmt.Sprint(i)})
	}
	path := "/deploy/" + v.ID + "/events"
	msgs := func(q string) []string {
		t.Helper()
		var out []string
		for _, e := range h.do("alice", http.MethodGet, path+q, nil).events(t) {
			out = append(out, e.Message)
		}
		return out
	}
	all := msgs("?limit=10")
	if len(all) != 6 {
		t.Fatalf("events = %v, want created and 5 scales", all)
	}
	evs := h.do("alice", http.MethodGet, path+"?limit=10", nil).events(t)
	tests := []struct {
		query string
		want  []string
	}{
		{"?limit=2", []string{"3", "4"}}, // the newest, oldest first
		{"?since=" + base.Add(3*time.Minute).Format(time.RFC3339), []string{"3", "4"}},
		{"?since=" + base.Add(time.Hour).Format(time.RFC3339), nil},
		{"?after=" + evs[2].ID + "&limit=2", []string{"2", "3"}}, // the oldest after the cursor
		{"?after=" + evs[5].ID, nil},
	}
	for _, tt := range tests {
		if d := cmp.Diff(tt.want, msgs(tt.query)); d != "" {
			t.Errorf("GET %s (-want +got):\n%s", tt.query, d)
		}
	}

	bad := []struct{ query, header, param string }{
		{query: "?since=yesterday", param: "since"},
		{query: "?since=2026-11-18", param: "since"},
		{query: "?limit=0", param: "limit"},
		{query: "?limit=1001", param: "limit"},
		{query: "?limit=ten", param: "limit"},
		{query: "?after=abc", param: "after"},
		{query: "?after=-1", param: "after"},
		{header: "x1", param: "Last-Event-ID"},
	}
	for _, b := range bad {
		req, _ := http.NewRequest(http.MethodGet, h.srv.URL+path+b.query, nil)
		req.Header.Set("Authorization", "Bearer tok-alice")
		if b.header != "" {
			req.Header.Set("Last-Event-ID", b.header)
		}
		resp, err := h.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body bytes.Buffer
		body.ReadFrom(resp.Body)
		resp.Body.Close()
		e := response{status: resp.StatusCode, body: body.Bytes()}.err(t)
		if e.Status != http.StatusBadRequest || e.Param == nil || *e.Param != b.param {
			t.Errorf("GET %s (Last-Event-ID %q): %+v, want 400 with param %s", b.query, b.header, e, b.param)
		}
	}
}

// TestInstancesEndpoint: the fleet's instances of the caller's deployment;
// another user's is not found.
func TestInstancesEndpoint(t *testing.T) {
	since := time.Date(2026, 11, 18, 11, 0, 0, 0, time.UTC)
	ready := since.Add(3 * time.Second)
	inst := fakeInstances{}
	h := newJournalHarness(t, inst)
	v := h.create("alice", "m")
	empty := h.create("alice", "other")
	inst[v.ID] = []InstanceView{
		{State: "pending", Since: since, Reason: "held back by the GPU quota"},
		{ID: "i1", State: "running", Since: ready, ReadyAt: &ready},
	}
	r := h.do("alice", http.MethodGet, "/deploy/"+v.ID+"/instances", nil)
	want := `{"instances":[` +
		`{"id":"","state":"pending","since":"2026-11-18T11:00:00Z","reason":"held back by the GPU quota"},` +
		`{"id":"i1","state":"running","since":"2026-11-18T11:00:03Z","reason":"","ready_at":"2026-11-18T11:00:03Z"}]}`
	var got bytes.Buffer
	if err := json.Compact(&got, r.body); err != nil || r.status != http.StatusOK || got.String() != want {
		t.Errorf("instances: %d %s (%v)\nwant %s", r.status, r.body, err, want)
	}
	r = h.do("alice", http.MethodGet, "/deploy/"+empty.ID+"/instances", nil)
	got.Reset()
	if err := json.Compact(&got, r.body); err != nil || got.String() != `{"instances":[]}` {
		t.Errorf("no instances: %s, want an empty list", r.body)
	}
	if e := h.do("bob", http.MethodGet, "/deploy/"+v.ID+"/instances", nil).err(t); e.Status != http.StatusNotFound || e.Code != "deployment_not_found" {
		t.Errorf("bob: %+v, want 404 deployment_not_found", e)
	}
}

// memJournal is an in-memory Journal for the stream tests, which run in a
// synctest bubble.
type memJournal struct {
	mu      sync.Mutex // mu guards events, fail and reads.
	events  []meter.Event
	fail    bool
	reads   int
	nextAt  time.Time
	records []meter.Event
}

func (j *memJournal) Record(e meter.Event) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.records = append(j.records, e)
}

// add appends an event of deployment d, dated 1s after the one before.
func (j *memJournal) add(d, typ, msg string) meter.Event {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.nextAt = j.nextAt.Add(time.Second)
	e := meter.Event{ID: meter.EventID(j.nextAt), Owner: "alice", DeployID: d, At: j.nextAt, Type: typ, Message: msg}
	j.events = append(j.events, e)
	return e
}

func (j *memJournal) setFail(v bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.fail = v
}

func (j *memJournal) DeployEvents(_ context.Context, q meter.EventQuery) ([]meter.Event, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.reads++
	if j.fail {
		return nil, errors.New("database down")
	}
	var out []meter.Event
	for _, e := range j.events {
		if e.Owner != q.Owner || e.DeployID != q.DeployID {
			continue
		}
		switch {
		case !q.After.IsZero() && e.At.After(q.After):
			out = append(out, e)
		case q.After.IsZero() && !e.At.Before(q.Since):
			out = append(out, e)
		}
	}
	if len(out) > q.Limit {
		if q.After.IsZero() {
			out = out[len(out)-q.Limit:]
		} else {
			out = out[:q.Limit]
		}
	}
	return out, nil
}

// streamRecorder is a ResponseWriter a test reads while the handler
// writes to it.
type streamRecorder struct {
	header http.Header

	mu      sync.Mutex // mu guards the fields below.
	code    int
	body    bytes.Buffer
	flushed int // bytes of body flushed
}

func (s *streamRecorder) Header() http.Header { return s.header }

func (s *streamRecorder) WriteHeader(code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.code == 0 {
		s.code = code
	}
}

func (s *streamRecorder) Write(b []byte) (int, error) {
	s.WriteHeader(http.StatusOK)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.body.Write(b)
}

func (s *streamRecorder) Flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushed = s.body.Len()
}

// seen returns what the client has received: the flushed bytes.
func (s *streamRecorder) seen() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.body.String()[:s.flushed]
}

// frame is one server-sent event, or a comment.
type frame struct{ ID, Event, Data, Comment string }

// frames parses what the client has received.
func (s *streamRecorder) frames() []frame {
	var out []frame
	for block := range strings.SplitSeq(s.seen(), "\n\n") {
		if block == "" {
			continue
		}
		var f frame
		for line := range strings.SplitSeq(block, "\n") {
			switch {
			case strings.HasPrefix(line, ": "):
				f.Comment = line[2:]
			case strings.HasPrefix(line, "id: "):
				f.ID = line[4:]
			case strings.HasPrefix(line, "event: "):
				f.Event = line[7:]
			case strings.HasPrefix(line, "data: "):
				f.Data = line[6:]
			}
		}
		out = append(out, f)
	}
	return out
}

// events returns the messages of the events received, in order.
func (s *streamRecorder) events(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, f := range s.frames() {
		if f.Comment != "" {
			continue
		}
		var e meter.Event
		if err := json.Unmarshal([]byte(f.Data), &e); err != nil {
			t.Fatalf("frame %+v: data is not an event: %v", f, err)
		}
		if e.ID != f.ID || e.Type != f.Event {
			t.Errorf("frame id %q event %q, data's id %q type %q: want the same", f.ID, f.Event, e.ID, e.Type)
		}
		out = append(out, e.Message)
	}
	return out
}

// streamHarness is the API with a memJournal, called in process (no
// socket) so that a synctest bubble can wait on its streams.
type streamHarness struct {
	t       *testing.T
	mux     http.Handler
	journal *memJournal
	id      string
}

// newStreamHarness serves alice's deployment with a memJournal. Call it
// inside a synctest bubble.
func newStreamHarness(t *testing.T) *streamHarness {
	store, err := deploy.OpenStore(filepath.Join(t.TempDir(), "deployments.json"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	d, err := store.Create(deploy.Deployment{ModelName: "m", Owner: "alice", CreatedAt: now, UpdatedAt: now,
		Config: deploy.Config{GPU: "A100-80GB", NumGPUs: 1, MaxBatchSize: 8, Weights: deploy.Weights{Repo: "org/m"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	j := &memJournal{nextAt: now.Add(-time.Hour)}
	mux := newMux(t, Config{Store: store, Live: &fakeLive{byID: map[string]deploy.Live{}}, Journal: j})
	return &streamHarness{t: t, mux: mux, journal: j, id: d.ID}
}

// open starts GET path as alice with header (key, value pairs) and returns
// what it writes and a func that makes the client leave and waits for the
// handler to return.
func (h *streamHarness) open(path string, header ...string) (*streamRecorder, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	req := httptest.NewRequestWithContext(ctx, http.MethodGet, path, nil)
	req.Header.Set("Authorization", "Bearer tok-alice")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := &streamRecorder{header: http.Header{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.mux.ServeHTTP(rec, req)
	}()
	leave := func() {
		cancel()
		synctest.Wait()
		select {
		case <-done:
		default:
			h.t.Fatal("the handler still runs after the client left")
		}
	}
	h.t.Cleanup(func() { cancel(); <-done })
	return rec, leave
}

// TestDeployEventsStream: the stream sends the events so far, then each
// new one within a poll, a keepalive every 15s, and ends when the client
// leaves.
func TestDeployEventsStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newStreamHarness(t)
		h.journal.add(h.id, meter.EventDeploymentCreated, "created")
		h.journal.add(h.id, meter.EventScale, "scaled 0 -> 1")
		h.journal.add("other", meter.EventScale, "another deployment's")
		rec, leave := h.open("/deploy/"+h.id+"/events", "Accept", "text/event-stream")
		synctest.Wait()
		if rec.code != http.StatusOK || rec.header.Get("Content-Type") != "text/event-stream" || rec.header.Get("Cache-Control") != "no-cache" {
			t.Fatalf("stream answered %d %v", rec.code, rec.header)
		}
		if d := cmp.Diff([]string{"created", "scaled 0 -> 1"}, rec.events(t)); d != "" {
			t.Errorf("first batch (-want +got):\n%s", d)
		}

		time.Sleep(300 * time.Millisecond)
		h.journal.add(h.id, meter.EventInstancePlaced, "placed")
		time.Sleep(eventsPoll)
		synctest.Wait()
		if d := cmp.Diff([]string{"created", "scaled 0 -> 1", "placed"}, rec.events(t)); d != "" {
			t.Errorf("within a poll of a new event (-want +got):\n%s", d)
		}

		// The journal down for a while: the stream waits, then catches up.
		h.journal.setFail(true)
		h.journal.add(h.id, meter.EventInstanceReady, "ready")
		time.Sleep(3 * eventsPoll)
		synctest.Wait()
		if n := len(rec.events(t)); n != 3 {
			t.Errorf("%d events while the journal is down, want the 3 sent before", n)
		}
		h.journal.setFail(false)
		time.Sleep(eventsPoll)
		synctest.Wait()
		if d := cmp.Diff([]string{"created", "scaled 0 -> 1", "placed", "ready"}, rec.events(t)); d != "" {
			t.Errorf("after the journal is back (-want +got):\n%s", d)
		}

		start := len(rec.frames())
		time.Sleep(keepaliveEvery)
		synctest.Wait()
		if fs := rec.frames()[start:]; !slices.Contains(fs, frame{Comment: "keepalive"}) {
			t.Errorf("frames in %s with no event: %+v, want a keepalive", keepaliveEvery, fs)
		}
		leave()
		reads := h.journal.reads
		time.Sleep(10 * eventsPoll)
		synctest.Wait()
		if h.journal.reads != reads {
			t.Errorf("the journal was read %d times after the client left", h.journal.reads-reads)
		}
	})
}

// TestDeployEventsStreamResume: after Last-Event-ID (or ?after=) the
// stream sends the events after that one, since or not.
func TestDeployEventsStreamResume(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newStreamHarness(t)
		first := h.journal.add(h.id, meter.EventDeploymentCreated, "created")
		h.journal.add(h.id, meter.EventScale, "scaled 0 -> 1")
		h.journal.add(h.id, meter.EventInstancePlaced, "placed")
		since := time.Now().Add(time.Hour).Format(time.RFC3339) // the cursor wins
		rec, leave := h.open("/deploy/"+h.id+"/events?since="+since, "Accept", "text/event-stream", "Last-Event-ID", first.ID)
		synctest.Wait()
		if d := cmp.Diff([]string{"scaled 0 -> 1", "placed"}, rec.events(t)); d != "" {
			t.Errorf("resumed after the first (-want +got):\n%s", d)
		}
		leave()

		rec, leave = h.open("/deploy/" + h.id + "/events?stream=1&after=" + first.ID)
		bubbletest.Eventually(t, "the events after the first", func() bool { return len(rec.events(t)) == 2 })
		h.journal.add(h.id, meter.EventInstanceReady, "ready")
		bubbletest.Eventually(t, "the new event", func() bool { return len(rec.events(t)) == 3 })
		leave()
	})
}

// TestDeployEventsStreamErrors: a journal down when the stream starts is
// 503 with a JSON error, like the JSON answer; a bad cursor is 400.
func TestDeployEventsStreamErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newStreamHarness(t)
		h.journal.setFail(true)
		rec, _ := h.open("/deploy/"+h.id+"/events", "Accept", "text/event-stream")
		synctest.Wait()
		if rec.code != http.StatusServiceUnavailable || !strings.Contains(rec.body.String(), "ledger_unavailable") {
			t.Errorf("journal down: %d %s, want 503 ledger_unavailable", rec.code, rec.body.String())
		}
		rec, _ = h.open("/deploy/"+h.id+"/events", "Accept", "text/event-stream", "Last-Event-ID", "garbage")
		synctest.Wait()
		if rec.code != http.StatusBadRequest || !strings.Contains(rec.body.String(), "Last-Event-ID") {
			t.Errorf("bad Last-Event-ID: %d %s, want 400 naming it", rec.code, rec.body.String())
		}
	})
}

// TestRecordWithoutJournal: the deploy API works without a Journal (and
// serves no events).
func TestRecordWithoutJournal(t *testing.T) {
	h := newHarness(t, 0)
	v := h.create("alice", "m")
	h.do("alice", http.MethodPut, "/deploy/"+v.ID, map[string]any{"settings": map[string]any{"min_instances": 0, "max_instances": 1}}).view(t)
	if r := h.do("alice", http.MethodGet, "/deploy/"+v.ID+"/events", nil); r.status != http.StatusNotFound {
		t.Errorf("events without a Journal: %d, want 404", r.status)
	}
	h.do("alice", http.MethodDelete, "/deploy/"+v.ID, nil).view(t)
}
