package api

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/thawhq/thaw/httperr"
	"github.com/thawhq/thaw/meter"
)

// StatsSource is what GET /deploy/{id}/stats reads: the samples kept in
// the meter's database (meter.Store) and the live counts (stats.Sampler).
type StatsSource interface {
	// Samples returns a deployment's samples taken in [from, to).
	Samples(ctx context.Context, deployID string, from, to time.Time) ([]meter.Sample, error)
	// ColdStarts returns the intervals of a deployment's instances that
	// became ready in [from, to).
	ColdStarts(ctx context.Context, deployID string, from, to time.Time) ([]meter.Interval, error)
	// LastActive returns when a deployment's newest sample with a request
	// was taken.
	LastActive(ctx context.Context, deployID string) (time.Time, bool, error)
	// Live returns a deployment's instances by state and its held and
	// in-flight requests at now.
	Live(ctx context.Context, deployID string, now time.Time) (meter.Sample, error)
	// Interval is the time between samples: the smallest step.
	Interval() time.Duration
}

// GPUCount is the GPUs of one type the cluster has, and those free.
type GPUCount struct{ Total, Free int }

// GPUSource is the GPU types the cluster offers (GET /gpus): the runtime's
// inventory.
type GPUSource interface {
	GPUs(ctx context.Context) (map[string]GPUCount, error)
}

// Bounds of GET /deploy/{id}/stats.
const (
	// defaultPoints is the most points the default step gives.
	defaultPoints = 360
	// maxPoints is the most points a request may ask for.
	maxPoints = 10000
)

// registerStats adds GET /deploy/{id}/stats when the Config has Stats,
// and GET /gpus when it has GPUs or Prices (then the priced types, their
// counts unknown).
func (a *API) registerStats(mux *http.ServeMux, wrap func(http.Handler) http.Handler) {
	if a.cfg.Stats != nil {
		mux.Handle("GET /deploy/{id}/stats", wrap(http.HandlerFunc(a.stats)))
	}
	if a.cfg.GPUs != nil || a.cfg.Prices != nil {
		mux.Handle("GET /gpus", wrap(http.HandlerFunc(a.gpus)))
	}
}

// statsNow is the live block of GET /deploy/{id}/stats.
type statsNow struct {
	At time.Time `json:"at"`
	meter.Counts
	LastRequestAt *time.Time `json:"last_request_at"`
}

// statsView is GET /deploy/{id}/stats's body.
type statsView struct {
	DeployID    string        `json:"deploy_id"`
	From        time.Time     `json:"from"`
	To          time.Time     `json:"to"`
	StepSeconds float64       `json:"step_seconds"`
	Now         statsNow      `json:"now"`
	Points      []meter.Point `json:"points"`
}

func (a *API) stats(w http.ResponseWriter, r *http.Request) {
	d, ok := a.mine(w, r)
	if !ok {
		return
	}
	now := a.cfg.Now().UTC()
	from, to, ok := window(w, r, now, now.Add(-time.Hour))
	if !ok {
		return
	}
	step, ok := a.step(w, r, to.Sub(from))
	if !ok {
		return
	}
	src, ctx := a.cfg.Stats, r.Context()
	live, err := src.Live(ctx, d.ID, now)
	if err != nil {
		statsFailed(w, a.cfg.Logger, err)
		return
	}
	v := statsView{DeployID: d.ID, From: from, To: to, StepSeconds: step.Seconds(),
		Now: statsNow{At: now, Counts: live.Counts}}
	if live.Active() {
		v.Now.LastRequestAt = &now
	} else if at, ok, err := src.LastActive(ctx, d.ID); err != nil {
		statsFailed(w, a.cfg.Logger, err)
		return
	} else if ok {
		v.Now.LastRequestAt = &at
	}
	samples, err := src.Samples(ctx, d.ID, from, to)
	if err != nil {
		statsFailed(w, a.cfg.Logger, err)
		return
	}
	colds, err := src.ColdStarts(ctx, d.ID, from, to)
	if err != nil {
		statsFailed(w, a.cfg.Logger, err)
		return
	}
	v.Points = meter.Series(samples, colds, from, to, step)
	writeJSON(w, http.StatusOK, v)
}

// step reads the step query parameter (a Go duration, "30s", or seconds,
// "30") for a window of span, or writes 400. The default is the smallest
// multiple of the sample interval that gives at most defaultPoints points.
func (a *API) step(w http.ResponseWriter, r *http.Request, span time.Duration) (time.Duration, bool) {
	interval := a.cfg.Stats.Interval()
	v := r.URL.Query().Get("step")
	if v == "" {
		per := (span + defaultPoints - 1) / defaultPoints
		return max(interval, (per+interval-1)/interval*interval), true
	}
	step, err := time.ParseDuration(v)
	if err != nil {
		secs, perr := strconv.ParseFloat(v, 64)
		// Beyond a year of seconds would overflow a Duration; no window
		// is that long.
		if perr != nil || math.IsNaN(secs) || math.Abs(secs) > 366*24*3600 {
			httperr.Encode(w, http.StatusBadRequest, "invalid_step", "step",
				fmt.Sprintf("step=%q is not a duration (e.g. 30s, 5m) or a number of seconds", httperr.Clip(v)))
			return 0, false
		}
		step = time.Duration(secs * float64(time.Second))
	}
	switch {
	case step < interval:
		httperr.Encode(w, http.StatusBadRequest, "invalid_step", "step",
			fmt.Sprintf("step=%q is shorter than the sample interval, %s", httperr.Clip(v), interval))
		return 0, false
	case (span+step-1)/step > maxPoints:
		httperr.Encode(w, http.StatusBadRequest, "too_many_points", "step",
			fmt.Sprintf("step=%q gives %d points from %s; at most %d: widen the step or narrow from and to",
				httperr.Clip(v), (span+step-1)/step, span, maxPoints))
		return 0, false
	}
	return step, true
}

func statsFailed(w http.ResponseWriter, log *slog.Logger, err error) {
	log.Error("stats unavailable", "err", err)
	unavailable(w, "stats_unavailable", "stats unavailable, retry later")
}

// gpuView is one GPU type of GET /gpus; counts and price are null when
// not known.
type gpuView struct {
	GPU             string   `json:"gpu"`
	Total           *int     `json:"total"`
	Free            *int     `json:"free"`
	PricePerGPUHour *float64 `json:"price_per_gpu_hour_usd"`
}

// gpus is GET /gpus: the runtime's GPU types with the meter's prices,
// sorted by name; the priced types (counts null) when the runtime cannot
// tell.
func (a *API) gpus(w http.ResponseWriter, r *http.Request) {
	var inv map[string]GPUCount
	if a.cfg.GPUs != nil {
		var err error
		if inv, err = a.cfg.GPUs.GPUs(r.Context()); err != nil {
			a.cfg.Logger.Warn("GPU inventory unknown: listing the priced types", "err", err)
			inv = nil
		}
	}
	names := slices.Collect(maps.Keys(inv))
	if inv == nil {
		names = slices.Collect(maps.Keys(a.cfg.Prices))
	}
	out := make([]gpuView, 0, len(names))
	for _, name := range names {
		v := gpuView{GPU: name}
		if c, ok := inv[name]; ok {
			v.Total, v.Free = &c.Total, &c.Free
		}
		if p, err := a.cfg.Prices.Rate(name); err == nil {
			v.PricePerGPUHour = &p
		}
		out = append(out, v)
	}
	slices.SortFunc(out, func(x, y gpuView) int { return cmp.Compare(x.GPU, y.GPU) })
	writeJSON(w, http.StatusOK, map[string][]gpuView{"gpus": out})
}
