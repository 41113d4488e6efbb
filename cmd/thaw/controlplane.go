package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel"
	"golang.org/x/sync/errgroup"

	"github.com/thawhq/thaw/api"
	"github.com/thawhq/thaw/auth"
	"github.com/thawhq/thaw/demand"
	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/endpoints"
	"github.com/thawhq/thaw/fleet"
	"github.com/thawhq/thaw/httperr"
	"github.com/thawhq/thaw/httpserve"
	"github.com/thawhq/thaw/lease"
	"github.com/thawhq/thaw/live"
	"github.com/thawhq/thaw/meter"
	"github.com/thawhq/thaw/proxy"
	"github.com/thawhq/thaw/routing"
	"github.com/thawhq/thaw/spend"
	"github.com/thawhq/thaw/xds"
)

// controlPlaneConfig is what `thaw dev` and `thaw server` configure of the
// control plane; they differ in the runtime, the users, the lock and the
// health fields.
type controlPlaneConfig struct {
	// Addr is the address to serve the API and inference endpoints on.
	Addr string
	// Replica names this replica among those sharing the Redis and the
	// lock; default replicaID().
	Replica string
	Store   *deploy.Store
	// NewRuntime builds the runtime a term of leadership runs the fleet
	// over (leader.go).
	NewRuntime func() (termRuntime, error)
	// TakeOver says the runtime adopts the instances a previous term (or
	// process) left running (Nomad): a new term's fleet then starts each
	// deployment at the desired count the previous leader published, and
	// keeps its endpoints until it has its own. False (thaw dev, whose
	// runtime kills leftovers): min_instances.
	TakeOver bool
	// Inventory is the runtime GET /gpus reads (localrt.Runtime,
	// nomad.Runtime); nil: the priced types only.
	Inventory any
	// Locker is the lock the replicas elect their leader with: Nomad's
	// Variables lock (thaw server), lease.Solo (thaw dev).
	Locker lease.Locker
	Users  *auth.Users
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
	// Health, when set, adds fields to GET /healthz's JSON body, after the
	// replica's role.
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

// controlPlane is what `thaw dev` and `thaw server` share. Every replica
// serves the deploy API, the OpenAI-compatible endpoint with its
// activator, /authz and xDS, and reports its demand in Redis; the leader
// alone runs a term (leader.go): the fleet over the runtime, the
// autoscaler, the scraper and the publishers the followers read.
type controlPlane struct {
	cfg      controlPlaneConfig
	replica  string
	log      *slog.Logger
	redis    *redis.Client
	ln       net.Listener
	handler  http.Handler
	reporter *demand.Reporter
	proxy    *proxy.Proxy
	// paths are the request paths the fleet's endpoint updates go to:
	// the activator and, with an Envoy edge, the xDS server. A follower
	// feeds them from Redis (sub) instead.
	paths    endpointsTee
	sub      *endpoints.Subscriber
	inflight endpoints.InflightReporter
	// follower is the leader's view of the fleet, read from Redis.
	follower *live.Reader
	lease    *lease.Lease
	// term is the running term of leadership; nil on a follower.
	term atomic.Pointer[term]
	// With an Envoy edge (else nil): its xDS server and the edge's grants.
	xds    *xds.Server
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
	c := &controlPlane{cfg: cfg, redis: p.Redis, replica: cfg.Replica, log: p.Log}
	if c.replica == "" {
		c.replica = replicaID()
	}
	if cfg.NewRuntime == nil || cfg.Locker == nil || cfg.Users == nil {
		return nil, errors.New("control plane: NewRuntime, Locker and Users are required")
	}
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
	if err := c.newRequestPath(ctx, p); err != nil {
		return nil, err
	}
	if err := c.newStats(p); err != nil {
		return nil, err
	}
	if c.lease, err = lease.New(lease.Config{Locker: cfg.Locker, ID: c.replica, Logger: p.Log}); err != nil {
		return nil, err
	}
	if c.handler, err = c.newHandler(p); err != nil {
		return nil, err
	}
	return c, nil
}

// replicaID names this process among replicas: "<host>-<pid>".
func replicaID() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}

// newMetering builds the meter's writer, which records the fleet's GPU-time
// facts in the ledger and closes, from the runtime's record, the intervals
// whose end thaw did not see; and the enforcer of spending limits.
func (c *controlPlane) newMetering(p *process) error {
	m := c.metering
	var err error
	wcfg := meter.WriterConfig{Ledger: m.store, Logger: p.Log, Leads: c.leads,
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
	ann := announcer{store: m.store, hooks: &spend.Webhooks{Logger: p.Log}, log: p.Log, leads: c.leads}
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
				if t := c.term.Load(); t != nil {
					t.loop.Wake(d.ID)
				}
			}
			if t := c.term.Load(); t != nil { // the other replicas refuse or serve them too
				t.pub.OwnerChanged(owner)
			}
		},
	})
	return err
}

// newRequestPath builds the activator and what reports its demand and its
// requests in flight per instance; with --xds-addr, the Envoy edge that
// routes warm traffic straight to the instances; and the Subscriber that
// feeds both from Redis while this replica follows.
func (c *controlPlane) newRequestPath(ctx context.Context, p *process) error {
	var err error
	c.reporter, err = demand.NewReporter(demand.ReporterConfig{Redis: c.redis, Replica: c.replica, Logger: p.Log})
	if err != nil {
		return err
	}
	c.proxy, err = proxy.New(proxy.Config{
		Resolver: resolver{c.cfg.Store, c.spend.Blocked}, Demand: c.reporter,
		HoldTimeout: c.cfg.HoldTimeout, MaxHeld: c.cfg.MaxHeld, Logger: p.Log,
	})
	if err != nil {
		return err
	}
	c.inflight = endpoints.InflightReporter{Redis: c.redis, Replica: c.replica, Inflight: c.proxy.InstanceInflight}
	c.paths = endpointsTee{c.proxy}
	if c.sub, err = endpoints.NewSubscriber(endpoints.SubscriberConfig{Redis: c.redis, Apply: followerPaths{c}, Logger: p.Log}); err != nil {
		return err
	}
	if c.follower, err = live.NewReader(live.Config{Redis: c.redis, Logger: p.Log}); err != nil {
		return err
	}
	if c.xds, err = c.cfg.Edge.newXDS(c.ln.Addr().String(), c.cfg.HoldTimeout, p.Log); err != nil {
		return err
	}
	if c.xds == nil {
		return nil
	}
	if c.grants, err = endpoints.CreateGrants(ctx, c.redis); err != nil {
		return err
	}
	c.paths = append(c.paths, xdsEndpoints{c.xds, c.cfg.Store.Get})
	return nil
}

// newHandler builds the public listener's routes: the deploy API, the
// inference endpoints and, with an Envoy edge, its /authz service.
func (c *controlPlane) newHandler(p *process) (http.Handler, error) {
	m := c.metering
	acfg := api.Config{Store: c.cfg.Store, Live: replicaView{c}, GPUQuota: c.cfg.GPUQuota, Logger: p.Log,
		Ledger: m.store, Prices: m.prices, Policy: m.policy, Blocker: c.spend}
	c.stats.configure(&acfg)
	c.configureJournal(&acfg)
	deployAPI, err := api.New(acfg)
	if err != nil {
		return nil, err
	}
	mux := newPublicMux(c.health, consoleHandler)
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

// Run serves until ctx is done or a component fails, campaigning for the
// leadership all along (leader.go); then it closes the ledger, once the
// meter's writer has written what it held.
func (c *controlPlane) Run(ctx context.Context) error {
	defer c.metering.store.Close()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return httpserve.Serve(gctx, c.cfg.Listen, c.ln, c.handler) })
	if c.cfg.PprofAddr != "" {
		g.Go(func() error { return servePprof(gctx, c.cfg.PprofAddr) })
	}
	g.Go(func() error { return c.reporter.Run(gctx) })
	g.Go(func() error { return c.inflight.Run(gctx) })
	g.Go(func() error { return c.sub.Run(gctx) })
	g.Go(func() error { return c.follower.Run(gctx) })
	g.Go(func() error { return c.meter.Run(gctx) })
	g.Go(func() error { return c.journal.Run(gctx) })
	g.Go(func() error { return c.spend.Run(gctx) })
	g.Go(func() error { return c.lease.Run(gctx, c.lead) })
	if c.xds != nil {
		g.Go(func() error { return c.xds.Run(gctx) })
		g.Go(func() error { return endpoints.FollowGrantKey(gctx, c.redis, c.grants) })
	}
	return g.Wait()
}
