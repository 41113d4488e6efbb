package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/thawhq/thaw/auth"
	"github.com/thawhq/thaw/demand"
	"github.com/thawhq/thaw/endpoints"
	"github.com/thawhq/thaw/httpserve"
	"github.com/thawhq/thaw/proxy"
)

// activatorConfig is `thaw activator`'s configuration, from flags.
type activatorConfig struct {
	addr        string
	redis       redisFlags
	usersFile   string
	holdTimeout time.Duration
	maxHeld     int
	proc        processFlags
}

func parseActivatorFlags(args []string, stderr io.Writer) (*activatorConfig, error) {
	c := &activatorConfig{}
	fs := newFlags("activator", "Usage: thaw activator --redis-addr HOST:PORT --users-file FILE [flags]\n\n"+
		"Holds requests for deployments with no free capacity and forwards them to\n"+
		"instances as they become ready. Run it behind Envoy (thaw server --xds-addr\n"+
		"--activators ...), as many replicas as you like.\n\nFlags:\n", stderr)
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8090", "`address` to serve held requests on (HTTP/1.1 and h2c)")
	c.redis.register(fs, "the Redis the control plane uses (required)")
	fs.StringVar(&c.usersFile, "users-file", "", "users and token hashes `file`, the same as thaw server's (required)")
	fs.DurationVar(&c.holdTimeout, "hold-timeout", 10*time.Minute, "how long a request may wait for capacity before it gets 503")
	fs.IntVar(&c.maxHeld, "max-held", 10000, "requests held per deployment before new ones get 429")
	c.proc.register(fs, defaultActivatorMetricsAddr)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if c.redis.addr == "" || c.usersFile == "" {
		fs.Usage()
		return nil, errors.New("--redis-addr and --users-file are required")
	}
	if err := c.proc.parseLevel(); err != nil {
		return nil, err
	}
	return c, nil
}

// runActivator runs `thaw activator`: the activator as its own process.
// Any number of replicas share state through Redis: they learn deployments
// and ready instances from the control plane's published records, report
// demand and wake-ups to the autoscaler, and report requests in flight per
// instance so scale-down drains them too.
func runActivator(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, p, err := parseAndStart(ctx, args, stderr, parseActivatorFlags)
	if err != nil {
		return err
	}
	defer p.close()
	a, err := newActivator(ctx, p, cfg, p.Users)
	if err != nil {
		return err
	}
	banner := func(w io.Writer) {
		fmt.Fprintf(w, "thaw activator %s is serving on http://%s (redis %s)\n", a.replica, a.ln.Addr(), cfg.redis.redacted())
	}
	return p.serve(ctx, stdout, "thaw activator", banner, a.Run, p.watchUsers)
}

// activator is one activator replica (package proxy), fed by the endpoints
// the control plane publishes in Redis, reporting its demand and its
// requests in flight per instance.
type activator struct {
	replica  string
	listen   httpserve.Config
	ln       net.Listener
	handler  http.Handler
	reporter *demand.Reporter
	sub      *endpoints.Subscriber
	inflight endpoints.InflightReporter
	grants   *auth.Grants
	redis    *redis.Client
}

// newActivator builds the replica over p's Redis. It waits (bounded by ctx)
// for the control plane's edge grant key, without which it could not
// authenticate Envoy's direct requests, and only then opens its listener.
func newActivator(ctx context.Context, p *process, cfg *activatorConfig, users *auth.Users) (*activator, error) {
	host, _ := os.Hostname()
	a := &activator{replica: fmt.Sprintf("activator-%s-%d", host, os.Getpid()), listen: cfg.proc.listen, redis: p.Redis}
	var err error
	a.reporter, err = demand.NewReporter(demand.ReporterConfig{Redis: p.Redis, Replica: a.replica, Logger: p.Log})
	if err != nil {
		return nil, err
	}
	if a.sub, err = endpoints.NewSubscriber(endpoints.SubscriberConfig{Redis: p.Redis, Logger: p.Log}); err != nil {
		return nil, err
	}
	p.Log.Info("waiting for the control plane's edge grant key in Redis")
	if a.grants, err = endpoints.WaitGrants(ctx, p.Redis); err != nil {
		return nil, err
	}
	px, err := proxy.New(proxy.Config{Resolver: a.sub, Demand: a.reporter, HoldTimeout: cfg.holdTimeout, MaxHeld: cfg.maxHeld, Logger: p.Log})
	if err != nil {
		return nil, err
	}
	a.sub.SetApplier(px)
	a.inflight = endpoints.InflightReporter{Redis: p.Redis, Replica: a.replica, Inflight: px.InstanceInflight}
	mux := newPublicMux(func() map[string]string { return map[string]string{"role": "activator"} }, nil)
	// Requests on Envoy's direct route come without the caller's token
	// (the route removes it) and with the edge's grant.
	px.Register(mux, func(h http.Handler) http.Handler { return users.RequireOrGrant(a.grants, h) })
	a.handler = mux
	if a.ln, err = listen(cfg.addr); err != nil {
		return nil, err
	}
	return a, nil
}

// Run serves until ctx is done or a component fails.
func (a *activator) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return httpserve.Serve(gctx, a.listen, a.ln, a.handler) })
	g.Go(func() error { return a.reporter.Run(gctx) })
	g.Go(func() error { return a.sub.Run(gctx) })
	g.Go(func() error { return a.inflight.Run(gctx) })
	g.Go(func() error { return endpoints.FollowGrantKey(gctx, a.redis, a.grants) })
	return g.Wait()
}

// processConfig: an activator replica shares the control plane's Redis and
// users file.
func (c *activatorConfig) processConfig() processConfig {
	return processConfig{Service: "thaw-activator", Flags: c.proc, Redis: c.redis, UsersFile: c.usersFile}
}
