package api

import "net/http"

// Journal is a deployment's events (GET /deploy/{id}/events). Owned by the
// events work: see docs.
type Journal interface{}

// InstanceLister lists a deployment's instances (GET /deploy/{id}/instances).
type InstanceLister interface{}

// registerDeployEvents adds GET /deploy/{id}/events and
// GET /deploy/{id}/instances when the Config has what they serve.
func (a *API) registerDeployEvents(mux *http.ServeMux, wrap func(http.Handler) http.Handler) {}
