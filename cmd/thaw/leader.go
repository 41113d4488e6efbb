package main

import (
	"context"
	"slices"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"golang.org/x/sync/errgroup"

	"github.com/thawhq/thaw/api"
	"github.com/thawhq/thaw/autoscaler"
	"github.com/thawhq/thaw/demand"
	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/endpoints"
	"github.com/thawhq/thaw/fleet"
	"github.com/thawhq/thaw/httperr"
	"github.com/thawhq/thaw/live"
	"github.com/thawhq/thaw/meter"
)

// A term of leadership: what one replica alone runs, from winning the
// lease to losing it (or stopping). A term's parts are built fresh when it
// starts and dropped when it ends, so a replica that leads again starts
// clean; the instances outlive terms (the runtime adopts them).
//
// Between terms, and on followers, the request paths keep the endpoints
// they had and follow the leader's through Redis (followerPaths); the API
// shows the leader's view of the fleet (live.Reader).

// termRuntime is the runtime a term runs the fleet over.
type termRuntime struct {
	fleet.Runtime
	// Live, when set, wraps the fleet's status before the API shows it
	// (nomad.Live adds what is wrong with Nomad).
	Live func(api.Live) api.Live
	// Runs is what runs beside the fleet for the term: the runtime's own
	// loop, the purger of deleted deployments.
	Runs []func(context.Context) error
}

// term is one term of leadership.
type term struct {
	started time.Time
	rt      termRuntime
	fleet   *fleet.Fleet
	// live is the fleet's status as the API shows it.
	live    api.Live
	loop    *autoscaler.Loop
	scraper *demand.Scraper
	// pub publishes the fleet's endpoints to the other replicas and the
	// activators; views publishes its status to the other replicas.
	pub     *endpoints.Publisher
	views   *live.Publisher
	metrics metric.Registration
}

// lead runs one term: the lease calls it when this replica wins, and
// cancels ctx when it loses.
func (c *controlPlane) lead(ctx context.Context) error {
	t, err := c.newTerm()
	if err != nil {
		return err
	}
	c.term.Store(t)
	// Close at once what ended while no leader ran (the meter's check
	// runs on the leader only).
	c.meter.CheckNow()
	defer func() {
		c.term.Store(nil)
		_ = t.metrics.Unregister()
		// Follow the next leader's endpoints from now on.
		c.sub.Resync()
	}()
	g, gctx := errgroup.WithContext(ctx)
	for _, run := range t.rt.Runs {
		g.Go(func() error { return run(gctx) })
	}
	g.Go(func() error { return t.fleet.Run(gctx) })
	g.Go(func() error { return t.loop.Run(gctx) })
	g.Go(func() error { return t.scraper.Run(gctx) })
	g.Go(func() error { return demand.ListenWakes(gctx, c.redis, t.loop.Wake) })
	g.Go(func() error { return t.pub.Run(gctx) })
	g.Go(func() error { return t.views.Run(gctx) })
	g.Go(func() error { return c.stats.sampler.Run(gctx) })
	return g.Wait()
}

// leads tells whether this replica runs a term now.
func (c *controlPlane) leads() bool { return c.term.Load() != nil }

// newTerm builds a term's parts: the runtime, the fleet over it, the
// autoscaler's loop, the scraper of the model servers' metrics and the
// publishers of the fleet's endpoints and status.
func (c *controlPlane) newTerm() (_ *term, err error) {
	t := &term{started: time.Now()}
	log := c.log
	if t.rt, err = c.cfg.NewRuntime(); err != nil {
		return nil, err
	}
	t.pub, err = endpoints.NewPublisher(endpoints.PublisherConfig{Redis: c.redis, Lookup: c.cfg.Store.Get,
		Blocked: c.spend.Blocked, Logger: log})
	if err != nil {
		return nil, err
	}
	fcfg := fleet.Config{
		Runtime: t.rt, Store: spendLimited{c.cfg.Store, c.spend.Blocked}, Endpoints: append(slices.Clip(c.paths), t.pub),
		GPUQuota: c.cfg.GPUQuota, ProbeInterval: c.cfg.ProbeInterval, Logger: log,
		StartTimeout: c.metering.startTimeout,
		Usage:        func(u fleet.Usage) { c.meter.Add(usageFact(u)) },
		Events: func(e fleet.Event) {
			c.journal.Record(fleetEvent(e))
			t.views.Poke() // the followers see it at once, not at the next interval
		},
	}
	if c.cfg.TakeOver {
		// What the previous leader wanted, as this replica last read it.
		fcfg.Desired = c.follower.Desired
	}
	if t.fleet, err = fleet.New(fcfg); err != nil {
		return nil, err
	}
	t.live = t.fleet
	if t.rt.Live != nil {
		t.live = t.rt.Live(t.fleet)
	}
	t.loop, err = autoscaler.NewLoop(autoscaler.LoopConfig{
		Decide: autoscaler.Config{IdleTimeout: c.cfg.IdleTimeout},
		Fleet:  scaleTargets{t.fleet},
		Demand: demand.Reader{Redis: c.redis},
		Logger: log,
		Scaled: c.recordScale,
	})
	if err != nil {
		return nil, err
	}
	if t.scraper, err = c.newScraper(t); err != nil {
		return nil, err
	}
	if t.views, err = live.NewPublisher(live.Config{Redis: c.redis, Logger: log}, func() map[string]live.View { return views(c.cfg.Store, t) }); err != nil {
		return nil, err
	}
	if t.metrics, err = t.fleet.RegisterMetrics(otel.GetMeterProvider()); err != nil {
		return nil, err
	}
	return t, nil
}

// newScraper builds the term's scraper of the ready instances' metrics,
// which counts tokens into the ledger and feeds the stats sampler. An
// instance held before the term began had its tokens counted by the
// leader before (or by this replica's previous term).
func (c *controlPlane) newScraper(t *term) (*demand.Scraper, error) {
	tokens, err := meter.NewTokenCounter(meter.TokenCounterConfig{Ledger: c.metering.store,
		Held: c.meter.Held, Started: t.started, Logger: c.log})
	if err != nil {
		return nil, err
	}
	s, err := demand.NewScraper(demand.ScraperConfig{Redis: c.redis, Logger: c.log,
		Targets: func() []demand.Target { return scrapeTargets(t.fleet.ReadyInstances()) },
		Tokens:  tokens,
		Owner: func(deployID string) string {
			d, err := c.cfg.Store.Get(deployID)
			if err != nil {
				return ""
			}
			return d.Owner
		},
	})
	if err != nil {
		return nil, err
	}
	s.ObserveRounds(c.stats.sampler)
	return s, nil
}

// views is the term's fleet as the followers show it: every deployment
// the fleet knows.
func views(store *deploy.Store, t *term) map[string]live.View {
	out := map[string]live.View{}
	for _, n := range t.fleet.Counts() {
		d, err := store.Get(n.DeployID)
		if err != nil {
			continue
		}
		out[n.DeployID] = live.View{Live: t.live.Live(d), Instances: fleetInstances{t.fleet}.Instances(n.DeployID), Counts: n}
	}
	return out
}

// replicaView is the fleet as this replica shows it: its own term's when
// it leads, the leader's (through Redis) when it follows.
type replicaView struct{ c *controlPlane }

func (v replicaView) Live(d deploy.Deployment) deploy.Live {
	if t := v.c.term.Load(); t != nil {
		return t.live.Live(d)
	}
	return v.c.follower.Live(d)
}

func (v replicaView) Instances(deployID string) []api.InstanceView {
	if t := v.c.term.Load(); t != nil {
		return fleetInstances{t.fleet}.Instances(deployID)
	}
	return v.c.follower.Instances(deployID)
}

// Counts is every deployment's instances by state.
func (v replicaView) Counts() []fleet.Counts {
	if t := v.c.term.Load(); t != nil {
		return t.fleet.Counts()
	}
	return v.c.follower.Counts()
}

// termStarted is when this replica's term began; zero on a follower.
func (c *controlPlane) termStarted() time.Time {
	if t := c.term.Load(); t != nil {
		return t.started
	}
	return time.Time{}
}

// followerPaths applies the leader's endpoints, read from Redis, to this
// replica's request paths while it follows; while it leads its own fleet
// feeds them.
type followerPaths struct{ c *controlPlane }

var _ endpoints.Refuser = followerPaths{}

func (f followerPaths) SetEndpoints(deployID string, capacity int, addrs map[string]string) {
	if !f.c.leads() {
		f.c.paths.SetEndpoints(deployID, capacity, addrs)
	}
}

func (f followerPaths) Fail(deployID, reason string) {
	if !f.c.leads() {
		f.c.paths.Fail(deployID, reason)
	}
}

func (f followerPaths) Recover(deployID string) {
	if !f.c.leads() {
		f.c.paths.Recover(deployID)
	}
}

func (f followerPaths) Remove(deployID string) {
	if !f.c.leads() {
		f.c.paths.Remove(deployID)
	}
}

func (f followerPaths) Refuse(deployID string, err *httperr.Error) {
	if !f.c.leads() {
		f.c.proxy.Refuse(deployID, err)
	}
}

func (f followerPaths) Unrefuse(deployID string) {
	if !f.c.leads() {
		f.c.proxy.Unrefuse(deployID)
	}
}

// health is GET /healthz's fields: the replica's role and whom it follows,
// then the command's.
func (c *controlPlane) health() map[string]string {
	st := c.lease.Status()
	out := map[string]string{"role": "follower", "leader": st.Holder}
	if st.Leader {
		out["role"] = "leader"
	}
	if c.cfg.Health != nil {
		for k, v := range c.cfg.Health() {
			out[k] = v
		}
	}
	return out
}
