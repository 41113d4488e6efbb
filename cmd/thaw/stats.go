package main

import (
	"context"
	"sync"
	"time"

	"github.com/thawhq/thaw/api"
	"github.com/thawhq/thaw/demand"
	"github.com/thawhq/thaw/localrt"
	"github.com/thawhq/thaw/meter"
	"github.com/thawhq/thaw/nomad"
	"github.com/thawhq/thaw/stats"
)

// statsPlane is the sampler of deployments' time series and what GET /gpus
// reads.
type statsPlane struct {
	sampler *stats.Sampler
	source  statsSource
	// gpus is the runtime's GPU inventory; nil when it cannot tell (GET
	// /gpus then lists the priced types).
	gpus api.GPUSource
}

// statsSource is what GET /deploy/{id}/stats reads: the samples in the
// ledger's database, the live counts from the sampler.
type statsSource struct {
	*meter.Store
	*stats.Sampler
}

// newStats builds the sampler of deployments' time series (and what GET
// /gpus reads). Every replica's answers GET /deploy/{id}/stats; the
// leader's term runs it (samples) and feeds it its scraper's rounds.
func (c *controlPlane) newStats(p *process) error {
	m := c.metering
	s, err := stats.New(stats.Config{
		Store: m.store, Interval: m.statsInterval, Retention: m.statsRetention, Logger: p.Log,
		Instances: func() []stats.Instances {
			counts := replicaView{c}.Counts()
			out := make([]stats.Instances, len(counts))
			for i, n := range counts {
				out[i] = stats.Instances{DeployID: n.DeployID, Running: n.Ready, Starting: n.Starting,
					Pending: n.Pending, Draining: n.Draining}
			}
			return out
		},
		Demand: func(ctx context.Context) (map[string]stats.Demand, error) {
			counts, err := demand.Reader{Redis: c.redis}.Counts(ctx)
			if err != nil {
				return nil, err
			}
			out := make(map[string]stats.Demand, len(counts))
			for id, n := range counts {
				out[id] = stats.Demand{Held: n.Held, InFlight: n.InFlight}
			}
			return out, nil
		},
		Owner: func(id string) string {
			d, err := c.cfg.Store.Get(id)
			if err != nil {
				return ""
			}
			return d.Owner
		},
		// Like the token counter: an instance held before this term
		// began was counted by the previous leader.
		Adopted: func(id string) bool {
			at, ok := c.meter.Held(id)
			return ok && at.Before(c.termStarted())
		},
	})
	if err != nil {
		return err
	}
	c.stats = statsPlane{sampler: s, source: statsSource{m.store, s}, gpus: gpuSource(c.cfg.Inventory)}
	return nil
}

// configure sets the API's Stats and GPUs.
func (s *statsPlane) configure(cfg *api.Config) {
	cfg.Stats = s.source
	cfg.GPUs = s.gpus
}

// localGPUs is the local runtime's inventory (thaw dev's --gpus).
type localGPUs interface {
	GPUs() map[string]localrt.GPUCount
}

// clusterGPUs is the Nomad clients' GPUs (thaw server).
type clusterGPUs interface {
	GPUs(ctx context.Context) (map[string]nomad.GPUCount, error)
}

// gpuSource returns the runtime's GPU inventory for GET /gpus, nil when
// the runtime cannot tell.
func gpuSource(rt any) api.GPUSource {
	switch g := rt.(type) {
	case localGPUs:
		return gpuFunc(func(context.Context) (map[string]api.GPUCount, error) {
			return convertGPUs(g.GPUs(), func(c localrt.GPUCount) api.GPUCount { return api.GPUCount{Total: c.Total, Free: c.Free} }), nil
		})
	case clusterGPUs:
		return &cachedGPUs{ttl: 5 * time.Second, read: func(ctx context.Context) (map[string]api.GPUCount, error) {
			by, err := g.GPUs(ctx)
			if err != nil {
				return nil, err
			}
			return convertGPUs(by, func(c nomad.GPUCount) api.GPUCount { return api.GPUCount{Total: c.Total, Free: c.Free} }), nil
		}}
	}
	return nil
}

func convertGPUs[C any](by map[string]C, conv func(C) api.GPUCount) map[string]api.GPUCount {
	out := make(map[string]api.GPUCount, len(by))
	for name, c := range by {
		out[name] = conv(c)
	}
	return out
}

// gpuFunc is a func as an api.GPUSource.
type gpuFunc func(ctx context.Context) (map[string]api.GPUCount, error)

func (f gpuFunc) GPUs(ctx context.Context) (map[string]api.GPUCount, error) { return f(ctx) }

// cachedGPUs answers from its last good read for ttl: the console polls
// GET /gpus, and each read of Nomad lists its nodes and their allocations.
type cachedGPUs struct {
	ttl  time.Duration
	read func(ctx context.Context) (map[string]api.GPUCount, error)
	// mu guards at and by, and serialises reads.
	mu sync.Mutex
	at time.Time
	by map[string]api.GPUCount
}

func (c *cachedGPUs) GPUs(ctx context.Context) (map[string]api.GPUCount, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.by != nil && time.Since(c.at) < c.ttl {
		return c.by, nil
	}
	by, err := c.read(ctx)
	if err != nil {
		return nil, err
	}
	c.by, c.at = by, time.Now()
	return by, nil
}
