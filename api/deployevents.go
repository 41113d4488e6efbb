package api

// A deployment's events (GET /deploy/{id}/events, JSON or a server-sent
// event stream) and instances (GET /deploy/{id}/instances).

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/httperr"
	"github.com/thawhq/thaw/meter"
)

// Journal is the deployments' events: the meter's Journal records them,
// its Store reads them back.
type Journal interface {
	// Record queues e for its owner's deployment e.DeployID. It never
	// blocks.
	Record(e meter.Event)
	// DeployEvents returns a deployment's events, oldest first, with
	// their IDs (meter.Store.DeployEvents).
	DeployEvents(ctx context.Context, q meter.EventQuery) ([]meter.Event, error)
}

// InstanceView is one instance of a deployment in GET
// /deploy/{id}/instances. The JSON names are a public contract.
type InstanceView struct {
	// ID is "" for an instance the GPU quota holds back.
	ID string `json:"id"`
	// State is "pending", "starting", "running" or "draining".
	State string `json:"state"`
	// Since is when it entered State.
	Since time.Time `json:"since"`
	// Reason says why a pending instance is not placed.
	Reason  string     `json:"reason"`
	ReadyAt *time.Time `json:"ready_at,omitempty"`
}

// InstanceLister lists a deployment's instances (the fleet's), ordered by
// Since; none for a deployment it does not run yet.
type InstanceLister interface {
	Instances(deployID string) []InstanceView
}

// Limits of GET /deploy/{id}/events.
const (
	// DefaultDeployEvents and MaxDeployEvents are ?limit='s default and
	// most.
	DefaultDeployEvents = 200
	MaxDeployEvents     = 1000
	// deployEventsWindow is how far back it looks without ?since=.
	deployEventsWindow = 24 * time.Hour
	// eventsPoll is how often a stream reads the journal for new events:
	// the database, so it sees the events other replicas write too.
	eventsPoll = time.Second
	// keepaliveEvery is how often a stream sends a comment line, so that
	// proxies on the way (Envoy's idle timeout) keep it open.
	keepaliveEvery = 15 * time.Second
)

// InstancesView is GET /deploy/{id}/instances' body.
type InstancesView struct {
	Instances []InstanceView `json:"instances"`
}

// registerDeployEvents adds GET /deploy/{id}/events and
// GET /deploy/{id}/instances when the Config has what they serve.
func (a *API) registerDeployEvents(mux *http.ServeMux, wrap func(http.Handler) http.Handler) {
	if a.cfg.Journal != nil {
		mux.Handle("GET /deploy/{id}/events", wrap(http.HandlerFunc(a.deployEvents)))
	}
	if a.cfg.Instances != nil {
		mux.Handle("GET /deploy/{id}/instances", wrap(http.HandlerFunc(a.instances)))
	}
}

// record adds an event about d to its journal, dated now, with detail (a
// value to encode as JSON, or nil). Without a Journal it does nothing.
func (a *API) record(d deploy.Deployment, typ, msg string, detail any) {
	if a.cfg.Journal == nil {
		return
	}
	e := meter.Event{Owner: d.Owner, DeployID: d.ID, At: a.cfg.Now().UTC(), Type: typ, Message: msg}
	if detail != nil {
		b, err := json.Marshal(detail)
		if err != nil {
			a.cfg.Logger.Error("event detail not encodable", "type", typ, "err", err)
		}
		e.Detail = b
	}
	a.cfg.Journal.Record(e)
}

// settingsDetail is the detail of deployment.created and .updated.
type settingsDetail struct {
	MinInstances int `json:"min_instances"`
	MaxInstances int `json:"max_instances"`
}

// recordCreated records d's creation.
func (a *API) recordCreated(d deploy.Deployment) {
	a.record(d, meter.EventDeploymentCreated,
		fmt.Sprintf("deployment %s created: %d x %s per instance, min %d, max %d instances",
			d.FullName(), d.Config.NumGPUs, d.Config.GPU, d.Settings.MinInstances, d.Settings.MaxInstances),
		settingsDetail{d.Settings.MinInstances, d.Settings.MaxInstances})
}

// recordUpdated records the change of d's settings from before.
func (a *API) recordUpdated(before deploy.Settings, d deploy.Deployment) {
	a.record(d, meter.EventDeploymentUpdated,
		fmt.Sprintf("settings changed: min instances %d -> %d, max instances %d -> %d",
			before.MinInstances, d.Settings.MinInstances, before.MaxInstances, d.Settings.MaxInstances),
		settingsDetail{d.Settings.MinInstances, d.Settings.MaxInstances})
}

// recordDeleted records d's deletion.
func (a *API) recordDeleted(d deploy.Deployment) {
	a.record(d, meter.EventDeploymentDeleted, fmt.Sprintf("deployment %s deleted", d.FullName()), nil)
}

// deployEvents is GET /deploy/{id}/events: the deployment's events,
// oldest first, as JSON, or as a server-sent event stream when the client
// accepts text/event-stream (or asks ?stream=1).
func (a *API) deployEvents(w http.ResponseWriter, r *http.Request) {
	d, ok := a.mine(w, r)
	if !ok {
		return
	}
	q, ok := a.eventQuery(w, r, d)
	if !ok {
		return
	}
	if wantsStream(r) {
		a.streamEvents(w, r, q)
		return
	}
	evs, err := a.cfg.Journal.DeployEvents(r.Context(), q)
	a.writeEvents(w, evs, err)
}

// wantsStream reports whether r asks for a server-sent event stream.
func wantsStream(r *http.Request) bool {
	if v := r.URL.Query().Get("stream"); v == "1" || v == "true" {
		return true
	}
	for _, v := range r.Header.Values("Accept") {
		for part := range strings.SplitSeq(v, ",") {
			mt, _, _ := strings.Cut(part, ";")
			if strings.EqualFold(strings.TrimSpace(mt), "text/event-stream") {
				return true
			}
		}
	}
	return false
}

// eventQuery reads ?since=, ?limit= and the cursor (?after= or the
// Last-Event-ID header), writing 400 for a bad one.
func (a *API) eventQuery(w http.ResponseWriter, r *http.Request, d deploy.Deployment) (meter.EventQuery, bool) {
	q := meter.EventQuery{Owner: d.Owner, DeployID: d.ID, Limit: DefaultDeployEvents,
		Since: a.cfg.Now().UTC().Add(-deployEventsWindow)}
	if !timeParam(w, r, "since", &q.Since) {
		return q, false
	}
	v := r.URL.Query()
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxDeployEvents {
			httperr.Encode(w, http.StatusBadRequest, "invalid_limit", "limit",
				fmt.Sprintf("limit=%q: want a whole number from 1 to %d", httperr.Clip(s), MaxDeployEvents))
			return q, false
		}
		q.Limit = n
	}
	param, cursor := "after", v.Get("after")
	if cursor == "" {
		param, cursor = "Last-Event-ID", r.Header.Get("Last-Event-ID")
	}
	if cursor != "" {
		t, err := meter.ParseEventID(cursor)
		if err != nil {
			httperr.Encode(w, http.StatusBadRequest, "invalid_event_id", param,
				fmt.Sprintf("%s %q is not an event id: use the id of an event this endpoint sent", param, httperr.Clip(cursor)))
			return q, false
		}
		q.After = t
	}
	return q, true
}

// instances is GET /deploy/{id}/instances.
func (a *API) instances(w http.ResponseWriter, r *http.Request) {
	d, ok := a.mine(w, r)
	if !ok {
		return
	}
	out := a.cfg.Instances.Instances(d.ID)
	if out == nil {
		out = []InstanceView{}
	}
	writeJSON(w, http.StatusOK, InstancesView{Instances: out})
}

// streamEvents serves q's events as server-sent events: first those q
// selects, then each new one as the journal gets it (polled every
// eventsPoll), with a keepalive comment every keepaliveEvery, until the
// client goes away.
func (a *API) streamEvents(w http.ResponseWriter, r *http.Request, q meter.EventQuery) {
	ctx := r.Context()
	s := &eventStream{w: w, rc: http.NewResponseController(w), cursor: q.After}
	var first []meter.Event
	if q.After.IsZero() {
		var err error
		if first, err = a.cfg.Journal.DeployEvents(ctx, q); err != nil {
			ledgerFailed(w, a.cfg.Logger, err)
			return
		}
		s.cursor = q.Since.Add(-time.Microsecond)
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // no proxy buffering
	w.WriteHeader(http.StatusOK)
	if s.rc.Flush() != nil || !s.send(first) {
		return
	}
	poll := time.NewTicker(eventsPoll)
	defer poll.Stop()
	keep := time.NewTicker(keepaliveEvery)
	defer keep.Stop()
	for {
		if !a.sendNew(ctx, s, q) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-poll.C:
		case <-keep.C:
			if !s.write(": keepalive\n\n") {
				return
			}
		}
	}
}

// eventStream is one client's stream of server-sent events.
type eventStream struct {
	w  http.ResponseWriter
	rc *http.ResponseController
	// cursor is the time of the last event sent (or just before the
	// first one wanted).
	cursor time.Time
	// failing: the last read of the journal failed (logged once).
	failing bool
}

// send writes evs, flushing each, and moves the cursor past them. It
// reports false once the client is gone.
func (s *eventStream) send(evs []meter.Event) bool {
	for _, e := range evs {
		data, err := json.Marshal(e)
		if err != nil {
			continue // cannot happen: the detail was written as JSON
		}
		if !s.write(fmt.Sprintf("id: %s\nevent: %s\ndata: %s\n\n", e.ID, e.Type, data)) {
			return false
		}
		s.cursor = e.At
	}
	return true
}

// write writes and flushes text; false once the client is gone.
func (s *eventStream) write(text string) bool {
	if _, err := s.w.Write([]byte(text)); err != nil {
		return false
	}
	return s.rc.Flush() == nil
}

// sendNew sends the events after the stream's cursor, page by page. A
// journal that cannot be read is logged (once until it can) and tried
// again at the next poll. It reports false once the client is gone.
func (a *API) sendNew(ctx context.Context, s *eventStream, q meter.EventQuery) bool {
	for {
		page := meter.EventQuery{Owner: q.Owner, DeployID: q.DeployID, After: s.cursor, Limit: MaxDeployEvents}
		evs, err := a.cfg.Journal.DeployEvents(ctx, page)
		if err != nil {
			if ctx.Err() != nil {
				return false
			}
			if !s.failing {
				a.cfg.Logger.Warn("events stream: journal unavailable; retrying", "deploy", q.DeployID, "err", err)
			}
			s.failing = true
			return true
		}
		s.failing = false
		if !s.send(evs) {
			return false
		}
		if len(evs) < MaxDeployEvents {
			return true
		}
	}
}
