package api

import (
	"net/http"
	"time"

	"github.com/thawhq/thaw/auth"
	"github.com/thawhq/thaw/meter"
)

// MaxEvents is the most events GET /account/events answers: the newest.
const MaxEvents = 200

// eventsWindow is how far back GET /account/events looks without ?since=.
const eventsWindow = 30 * 24 * time.Hour

// EventsView is the body of GET /account/events (the caller's events) and
// of GET /deploy/{id}/events (a deployment's): events, oldest first.
type EventsView struct {
	Events []meter.Event `json:"events"`
}

// events is GET /account/events: what thaw told the caller (spending
// thresholds crossed, deployments running idle) since ?since= (RFC 3339;
// default 30 days ago), at most MaxEvents of the newest, oldest first.
func (a *API) events(w http.ResponseWriter, r *http.Request) {
	since := a.cfg.Now().UTC().Add(-eventsWindow)
	if !timeParam(w, r, "since", &since) {
		return
	}
	evs, err := a.cfg.Ledger.Events(r.Context(), auth.User(r.Context()), since, MaxEvents)
	a.writeEvents(w, evs, err)
}

// writeEvents answers a read of events: evs (an empty list, not null,
// when there are none), or 503 when the read failed with err.
func (a *API) writeEvents(w http.ResponseWriter, evs []meter.Event, err error) {
	if err != nil {
		ledgerFailed(w, a.cfg.Logger, err)
		return
	}
	if evs == nil {
		evs = []meter.Event{}
	}
	writeJSON(w, http.StatusOK, EventsView{Events: evs})
}
