package client

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/api"
	"github.com/thawhq/thaw/auth"
	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/internal/metertest"
	"github.com/thawhq/thaw/meter"
)

// syncJournal records events in the ledger at once.
type syncJournal struct{ *meter.Store }

func (j syncJournal) Record(e meter.Event) { _ = j.AddJournalEvent(context.Background(), e) }

type oneInstance struct{}

func (oneInstance) Instances(string) []api.InstanceView {
	return []api.InstanceView{{ID: "i1", State: "starting", Since: time.Date(2026, 11, 18, 12, 0, 0, 0, time.UTC)}}
}

// eventsServer is the deploy API with a journal over a real ledger, and
// alice's deployment d. wrap, when set, sees each request first.
type eventsServer struct {
	url    string
	ledger *meter.Store
	d      deploy.Deployment
	at     time.Time
}

func startEventsServer(t *testing.T, wrap func(http.Handler) http.Handler) *eventsServer {
	t.Helper()
	store, ledger := metertest.Open(t)
	a, err := api.New(api.Config{Store: store, Live: noLive{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Journal: syncJournal{ledger}, Instances: oneInstance{}})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	a.Register(mux, auth.NewUsers(map[string]string{"alice": "tok-alice", "bob": "tok-bob"}).Require)
	var h http.Handler = mux
	if wrap != nil {
		h = wrap(mux)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	d, err := store.Create(deploy.Deployment{Owner: "alice", ModelName: "m", Config: deploy.Config{GPU: "A100-80GB", NumGPUs: 1}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &eventsServer{url: srv.URL, ledger: ledger, d: d, at: time.Now().Add(-time.Minute)}
}

// add records an event of the deployment, a second after the one before.
func (s *eventsServer) add(t *testing.T, msg string) {
	t.Helper()
	s.at = s.at.Add(time.Second)
	if err := s.ledger.AddJournalEvent(context.Background(), meter.Event{Owner: "alice", DeployID: s.d.ID, At: s.at, Type: meter.EventScale, Message: msg}); err != nil {
		t.Fatal(err)
	}
}

func messages(evs []meter.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Message)
	}
	return out
}

// TestDeployEventsAgainstTheAPI: the client reads a deployment's events and
// instances as the real handlers write them; another user's is not found.
func TestDeployEventsAgainstTheAPI(t *testing.T) {
	s := startEventsServer(t, nil)
	for _, m := range []string{"a", "b", "c"} {
		s.add(t, m)
	}
	ctx := context.Background()
	c := New(s.url, "tok-alice")
	evs, err := c.DeployEvents(ctx, s.d.ID, DeployEventsQuery{})
	if err != nil || len(evs) != 3 {
		t.Fatalf("DeployEvents = %v, %v; want 3 events", messages(evs), err)
	}
	evs, err = c.DeployEvents(ctx, s.d.ID, DeployEventsQuery{After: evs[0].ID, Limit: 1})
	if d := cmp.Diff([]string{"b"}, messages(evs)); d != "" || err != nil {
		t.Errorf("after the first, limit 1 (-want +got):\n%s%v", d, err)
	}
	inst, err := c.Instances(ctx, s.d.ID)
	if err != nil || len(inst) != 1 || inst[0].ID != "i1" || inst[0].State != "starting" {
		t.Errorf("Instances = %+v, %v", inst, err)
	}
	var e *Error
	if _, err := New(s.url, "tok-bob").DeployEvents(ctx, s.d.ID, DeployEventsQuery{}); !errors.As(err, &e) || e.Status != http.StatusNotFound {
		t.Errorf("bob's DeployEvents: %v, want 404", err)
	}
	if _, err := c.DeployEvents(ctx, s.d.ID, DeployEventsQuery{Limit: 5000}); !errors.As(err, &e) || e.Status != http.StatusBadRequest {
		t.Errorf("limit 5000: %v, want 400", err)
	}
}

// TestFollowDeployEvents: the stream delivers the events so far and new
// ones; a connection the server ends is reopened after the last event
// received (none lost, none repeated); fn's error ends it; a refusal is
// returned at once.
func TestFollowDeployEvents(t *testing.T) {
	followRetry = 10 * time.Millisecond
	t.Cleanup(func() { followRetry = time.Second })
	var mu sync.Mutex
	var queries []string
	cut := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			queries = append(queries, r.URL.RawQuery)
			first := len(queries) == 1
			mu.Unlock()
			if !first {
				next.ServeHTTP(w, r)
				return
			}
			// The first stream ends after its first event (thaw restarting).
			ctx, cancel := context.WithCancel(r.Context())
			defer cancel()
			next.ServeHTTP(cutWriter{w, cancel}, r.WithContext(ctx))
		})
	}
	s := startEventsServer(t, cut)
	s.add(t, "a")
	c := New(s.url, "tok-alice")
	got := make(chan meter.Event, 10)
	stop := errors.New("enough")
	done := make(chan error, 1)
	go func() {
		done <- c.FollowDeployEvents(context.Background(), s.d.ID, DeployEventsQuery{}, func(e meter.Event) error {
			got <- e
			if e.Message == "c" {
				return stop
			}
			return nil
		})
	}()
	first := <-got
	s.add(t, "b")
	s.add(t, "c")
	var msgs []string
	for e := range got {
		msgs = append(msgs, e.Message)
		if e.Message == "c" {
			break
		}
	}
	if err := <-done; !errors.Is(err, stop) {
		t.Errorf("FollowDeployEvents = %v, want fn's error", err)
	}
	if d := cmp.Diff([]string{"b", "c"}, msgs); first.Message != "a" || d != "" {
		t.Errorf("followed %q then (-want +got):\n%s", first.Message, d)
	}
	mu.Lock()
	if len(queries) != 2 || queries[1] != "after="+first.ID {
		t.Errorf("stream requests %q, want a second one after %s", queries, first.ID)
	}
	mu.Unlock()

	err := New(s.url, "tok-bob").FollowDeployEvents(context.Background(), s.d.ID, DeployEventsQuery{}, func(meter.Event) error { return nil })
	var e *Error
	if !errors.As(err, &e) || e.Status != http.StatusNotFound {
		t.Errorf("bob's follow: %v, want 404", err)
	}
}

// cutWriter ends its request (cancel) once an event was written.
type cutWriter struct {
	http.ResponseWriter
	cancel func()
}

func (w cutWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	if strings.Contains(string(b), "data: ") {
		w.cancel()
	}
	return n, err
}

func (w cutWriter) Flush() { w.ResponseWriter.(http.Flusher).Flush() }
