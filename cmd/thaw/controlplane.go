package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel"
	"golang.org/x/sync/errgroup"

	"github.com/thawhq/thaw/api"
	"github.com/thawhq/thaw/auth"
	"github.com/thawhq/thaw/autoscaler"
	"github.com/thawhq/thaw/demand"
	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/endpoints"
	"github.com/thawhq/thaw/fleet"
	"github.com/thawhq/thaw/httperr"
	"github.com/thawhq/thaw/httpserve"
	"github.com/thawhq/thaw/lease"
	"github.com/thawhq/thaw/meter"
	"github.com/thawhq/thaw/proxy"
	"github.com/thawhq/thaw/routing"
	"github.com/thawhq/thaw/spend"
	"github.com/thawhq/thaw/xds"
)

// controlPlaneConfig is what `thaw dev` and `thaw server` configure of the
// control plane; they differ in the runtime, the users and the health
// fields.
type controlPlaneConfig struct {
	// Addr is the address to serve the API and inference endpoints on.
	Addr    string
	Store   *deploy.Store
	Runtime fleet.Runtime
	Users   *auth.Users
	// WrapLive, when set, wraps the fleet's status before the API shows it.
	WrapLive func(api.Live) api.Live
	// GPUQuota is the GPUs one user may run at once; 0: no quota.
	GPUQuota int
	// ProbeInterval is the fleet's readiness probe interval; 0 is the
	// fleet's default.
	ProbeInterval time.Duration
	// PprofAddr, when set, serves Go's /debug/pprof there.
	PprofAddr   string
	IdleTimeout time.Duration
	HoldTimeout time.Duration
	MaxHeld     int
	// Health, when set, adds fields to GET /healthz's JSON body.
	Health func() map[string]string
	// Edge configures the Envoy edge's xDS server; zero: no Envoy edge.
	Edge edgeFlags
	// Listen has the public listener's connection limits.
	Listen httpserve.Config
	// Meter configures the usage ledger, prices and spending limits;
	// DataDir holds the ledger when --database-url is not given.
	Meter   meterFlags
	DataDir string
	// History is the runtime's record of ended instances, if it keeps one.
	History fleet.History
}

// controlPlane is what `thaw dev` and `thaw server` share: the deploy API,
// the OpenAI-compatible endpoint with its activator, demand in Redis,
// the autoscaler and the fleet over a runtime (which the command runs), and,
// with an Envoy edge, the xDS server and the Redis publisher that activator
// replicas follow.
type controlPlane struct {
	cfg      controlPlaneConfig
	redis    *redis.Client
	ln       net.Listener
	handler  http.Handler
	reporter *demand.Reporter
	proxy    *proxy.Proxy
	fleet    *fleet.Fleet
	scraper  *demand.Scraper
	loop     *autoscaler.Loop
	leader   *lease.Lease
	// With an Envoy edge (else nil): its xDS server, the publisher of
	// endpoints to activator replicas, and the edge's grants.
	xds    *xds.Server
	pub    *endpoints.Publisher
	grants *auth.Grants
	// The ledger and its configuration, the meter's writer and the
	// spending limits' enforcer.
	metering *metering
	meter    *meter.Writer
	spend    *spend.Enforcer
	// The deployments' events (cmd/thaw/journal.go).
	journal *meter.Journal
	// The deployments' time series (cmd/thaw/stats.go).
	stats statsPlane
}

// newControlPlane builds the control plane over p's Redis and opens its
// listener; Run serves. ctx bounds the setup's Redis writes.
func newControlPlane(ctx context.Context, p *process, cfg controlPlaneConfig) (_ *controlPlane, err error) {
	c := &controlPlane{cfg: cfg, redis: p.Redis}
	host, _ := os.Hostname()
	replica := fmt.Sprintf("%s-%d", host, os.Getpid())
	if c.ln, err = listen(cfg.Addr); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			c.ln.Close()
		}
	}()
	if c.metering, err = cfg.Meter.open(ctx, cfg.DataDir); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			c.metering.store.Close()
		}
	}()
	if err := c.newMetering(p); err != nil {
		return nil, err
	}
	if err := c.newJournal(p); err != nil {
		return nil, err
	}
	eps, err := c.newRequestPath(ctx, p, replica)
	if err != nil {
		return nil, err
	}
	if err := c.newScaling(p, replica, eps); err != nil {
		return nil, err
	}
	if err := c.newStats(p); err != nil {
		return nil, err
	}
	if c.handler, err = c.newHandler(p); err != nil {
		return nil, err
	}
	return c, nil
}

// newMetering builds the meter's writer, which records the fleet's GPU-time
// facts in the ledger and closes, from the runtime's record, the intervals
// whose end thaw did not see; and the enforcer of spending limits.
func (c *controlPlane) newMetering(p *process) error {
	m := c.metering
	var err error
	wcfg := meter.WriterConfig{Ledger: m.store, Logger: p.Log,
		Unknown: func(err error) bool { return errors.Is(err, fleet.ErrUnknownInstance) }}
	if c.cfg.History != nil {
		wcfg.History = c.cfg.History
	}
	if c.meter, err = meter.NewWriter(wcfg); err != nil {
		return err
	}
	if err := c.meter.RegisterMetrics(otel.GetMeterProvider()); err != nil {
		return err
	}
	ann := announcer{store: m.store, hooks: &spend.Webhooks{Logger: p.Log}, log: p.Log}
	c.spend, err = spend.New(spend.Config{
		Ledger: m.store, Prices: m.prices, Policy: m.policy, Interval: m.spendEvery,
		IdleAfter: m.idleAlert, Announce: ann.announce, Logger: p.Log,
		Changed: func(owner string, blocked bool) {
			msg, _ := c.spend.Blocked(owner)
			for _, d := range c.cfg.Store.List(owner) {
				// Requests already held get the resolver's answer at
				// once rather than wait for capacity that won't come.
				if blocked {
					c.proxy.Refuse(d.ID, httperr.InsufficientQuota("", msg))
				} else {
					c.proxy.Unrefuse(d.ID)
				}
				c.loop.Wake(d.ID)
			}
			if c.pub != nil { // activator replicas refuse or serve them too
				c.pub.OwnerChanged(owner)
			}
		},
	})
	return err
}

// newRequestPath builds the activator and what reports its demand, and,
// with --xds-addr, the Envoy edge that routes warm traffic straight to the
// instances and the publisher that activator replicas elsewhere follow. It
// returns where the fleet sends endpoints: to all of them.
func (c *controlPlane) newRequestPath(ctx context.Context, p *process, replica string) (endpointsTee, error) {
	var err error
	c.reporter, err = demand.NewReporter(demand.ReporterConfig{Redis: c.redis, Replica: replica, Logger: p.Log})
	if err != nil {
		return nil, err
	}
	c.proxy, err = proxy.New(proxy.Config{
		Resolver: resolver{c.cfg.Store, c.spend.Blocked}, Demand: c.reporter,
		HoldTimeout: c.cfg.HoldTimeout, MaxHeld: c.cfg.MaxHeld, Logger: p.Log,
	})
	if err != nil {
		return nil, err
	}
	eps := endpointsTee{c.proxy}
	if c.xds, err = c.cfg.Edge.newXDS(c.ln.Addr().String(), c.cfg.HoldTimeout, p.Log); err != nil {
		return nil, err
	}
	if c.xds == nil {
		return eps, nil
	}
	if c.grants, err = endpoints.CreateGrants(ctx, c.redis); err != nil {
		return nil, err
	}
	c.pub, err = endpoints.NewPublisher(endpoints.PublisherConfig{Redis: c.redis, Lookup: c.cfg.Store.Get,
		Blocked: c.spend.Blocked, Logger: p.Log})
	if err != nil {
		return nil, err
	}
	return append(eps, xdsEndpoints{c.xds, c.cfg.Store.Get}, c.pub), nil
}

// newScaling builds the fleet over the runtime, the autoscaler's loop, the
// scraper of the model servers' metrics, and the lease that lets one
// autoscaler act at a time among replicas sharing this Redis.
func (c *controlPlane) newScaling(p *process, replica string, eps fleet.Endpoints) error {
	var err error
	c.fleet, err = fleet.New(fleet.Config{
		Runtime: c.cfg.Runtime, Store: spendLimited{c.cfg.Store, c.spend.Blocked}, Endpoints: eps,
		GPUQuota: c.cfg.GPUQuota, ProbeInterval: c.cfg.ProbeInterval, Logger: p.Log,
		StartTimeout: c.metering.startTimeout,
		Usage:        func(u fleet.Usage) { c.meter.Add(usageFact(u)) },
		Events:       func(e fleet.Event) { c.journal.Record(fleetEvent(e)) },
	})
	if err != nil {
		return err
	}
	if err := c.fleet.RegisterMetrics(otel.GetMeterProvider()); err != nil {
		return err
	}
	c.loop, err = autoscaler.NewLoop(autoscaler.LoopConfig{
		Decide: autoscaler.Config{IdleTimeout: c.cfg.IdleTimeout},
		Fleet:  scaleTargets{c.fleet},
		Demand: demand.Reader{Redis: c.redis},
		Logger: p.Log,
		Scaled: c.recordScale,
	})
	if err != nil {
		return err
	}
	tokens, err := meter.NewTokenCounter(meter.TokenCounterConfig{Ledger: c.metering.store,
		Held: c.meter.Held, Started: c.meter.Started(), Logger: p.Log})
	if err != nil {
		return err
	}
	c.scraper, err = demand.NewScraper(demand.ScraperConfig{Redis: c.redis, Logger: p.Log,
		Targets: func() []demand.Target { return scrapeTargets(c.fleet.ReadyInstances()) },
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
		return err
	}
	c.leader, err = lease.New(lease.Config{Redis: c.redis, Key: "thaw:leader:autoscaler", ID: replica, Logger: p.Log})
	return err
}

// newHandler builds the public listener's routes: the deploy API, the
// inference endpoints and, with an Envoy edge, its /authz service.
func (c *controlPlane) newHandler(p *process) (http.Handler, error) {
	var live api.Live = c.fleet
	if c.cfg.WrapLive != nil {
		live = c.cfg.WrapLive(c.fleet)
	}
	m := c.metering
	acfg := api.Config{Store: c.cfg.Store, Live: live, GPUQuota: c.cfg.GPUQuota, Logger: p.Log,
		Ledger: m.store, Prices: m.prices, Policy: m.policy, Blocker: c.spend}
	c.stats.configure(&acfg)
	c.configureJournal(&acfg)
	deployAPI, err := api.New(acfg)
	if err != nil {
		return nil, err
	}
	mux := newPublicMux(c.cfg.Health, consoleHandler)
	users := c.cfg.Users
	deployAPI.Register(mux, users.Require)
	// This process is also the activator Envoy falls back to when no
	// replica is configured: it takes the edge's grants too.
	c.proxy.Register(mux, func(h http.Handler) http.Handler { return users.RequireOrGrant(c.grants, h) })
	if c.xds != nil {
		mux.Handle(routing.AuthzPrefix+"/", c.proxy.Authz(users, c.grants))
	}
	return mux, nil
}

// URL is the public listener's base URL: "http://127.0.0.1:8080".
func (c *controlPlane) URL() string { return "http://" + c.ln.Addr().String() }

// Run serves until ctx is done or a component fails; then it closes the
// ledger, once the meter's writer has written what it held.
func (c *controlPlane) Run(ctx context.Context) error {
	defer c.metering.store.Close()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return httpserve.Serve(gctx, c.cfg.Listen, c.ln, c.handler) })
	if c.cfg.PprofAddr != "" {
		g.Go(func() error { return servePprof(gctx, c.cfg.PprofAddr) })
	}
	g.Go(func() error { return c.reporter.Run(gctx) })
	g.Go(func() error { return c.scraper.Run(gctx) })
	g.Go(func() error { return demand.ListenWakes(gctx, c.redis, c.loop.Wake) })
	g.Go(func() error { return c.fleet.Run(gctx) })
	g.Go(func() error { return c.meter.Run(gctx) })
	g.Go(func() error { return c.journal.Run(gctx) })
	g.Go(func() error { return c.spend.Run(gctx) })
	g.Go(func() error { return c.runStats(gctx) })
	g.Go(func() error { return c.leader.Run(gctx, c.loop.Run) })
	if c.xds != nil {
		g.Go(func() error { return c.xds.Run(gctx) })
		g.Go(func() error { return c.pub.Run(gctx) })
		g.Go(func() error { return endpoints.FollowGrantKey(gctx, c.redis, c.grants) })
	}
	return g.Wait()
}
