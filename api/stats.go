package api

import "net/http"

// StatsSource is a deployment's time series (GET /deploy/{id}/stats).
type StatsSource interface{}

// GPUSource is the GPU types the cluster offers (GET /gpus).
type GPUSource interface{}

// registerStats adds GET /deploy/{id}/stats and GET /gpus when the Config
// has what they serve.
func (a *API) registerStats(mux *http.ServeMux, wrap func(http.Handler) http.Handler) {}
