package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
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
	"github.com/thawhq/thaw/lease"
	"github.com/thawhq/thaw/proxy"
	"github.com/thawhq/thaw/telemetry"
)

// controlPlane is what `thaw dev` and `thaw server` share: the deploy API,
// the OpenAI-compatible endpoint with its request holder, demand in Redis,
// the autoscaler and the fleet over a runtime. The commands differ in the
// runtime, the Redis, the users and what they print.
type controlPlane struct {
	// Name is the command ("thaw server"), for messages.
	Name string
	// Addr is the address to serve the API and inference endpoints on.
	Addr  string
	Store *deploy.Store
	// FleetStore is what the fleet reads deployments from; default Store.
	FleetStore fleet.Store
	Redis      *redis.Client
	Runtime    fleet.Runtime
	// RunRuntime runs Runtime until ctx is done.
	RunRuntime func(ctx context.Context) error
	Users      *auth.Users
	// WrapLive, when set, wraps the fleet's status before the API shows it.
	WrapLive func(api.Live) api.Live
	GPUQuota int
	// ProbeInterval is the fleet's readiness probe interval; 0 is the
	// fleet's default.
	ProbeInterval time.Duration
	// PprofAddr, when set, serves Go's /debug/pprof there.
	PprofAddr   string
	IdleTimeout time.Duration
	HoldTimeout time.Duration
	MaxHeld     int
	Telemetry   *telemetry.Telemetry
	Log         *slog.Logger
	// Health, when set, adds fields to GET /healthz's JSON body.
	Health func() map[string]string
	// Banner prints what the operator needs once the listener is up.
	Banner func(w io.Writer, base string)
	// Extra are more goroutines run with the others until ctx is done.
	Extra []func(ctx context.Context) error
	// Edge configures the Envoy edge's xDS server; zero: no Envoy edge.
	Edge edgeFlags
	// Listen has the public listener's limits and the metrics listener.
	Listen listenerFlags
}

// run serves until ctx is done or a component fails.
func (c controlPlane) run(ctx context.Context, stdout io.Writer) error {
	log := c.Log
	if c.FleetStore == nil {
		c.FleetStore = c.Store
	}
	host, _ := os.Hostname()
	replica := fmt.Sprintf("%s-%d", host, os.Getpid())
	reporter, err := demand.NewReporter(demand.ReporterConfig{Redis: c.Redis, Replica: replica, Logger: log})
	if err != nil {
		return err
	}
	px, err := proxy.New(proxy.Config{
		Resolver: resolver{c.Store}, Demand: reporter,
		HoldTimeout: c.HoldTimeout, MaxHeld: c.MaxHeld, Logger: log,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", c.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", c.Addr, err)
	}
	defer ln.Close() // on early returns; Serve closes it too
	// With --xds-addr, an Envoy edge routes warm traffic straight to the
	// instances, and activator replicas elsewhere (thaw activator) follow
	// the endpoints through Redis: the fleet tells all of them.
	xs, err := c.Edge.newXDS(ln.Addr().String(), c.HoldTimeout, log)
	if err != nil {
		return err
	}
	eps := endpointsTee{px}
	var pub *endpoints.Publisher
	var grants *auth.Grants // the edge's, with an Envoy edge
	if xs != nil {
		if grants, err = endpoints.CreateGrants(ctx, c.Redis); err != nil {
			return err
		}
		if pub, err = endpoints.NewPublisher(endpoints.PublisherConfig{Redis: c.Redis, Lookup: c.Store.Get, Logger: log}); err != nil {
			return err
		}
		eps = append(eps, xs, pub)
	}
	fl, err := fleet.New(fleet.Config{Runtime: c.Runtime, Store: c.FleetStore, Endpoints: eps, GPUQuota: c.GPUQuota, ProbeInterval: c.ProbeInterval, Logger: log})
	if err != nil {
		return err
	}
	if err := fl.RegisterMetrics(otel.GetMeterProvider()); err != nil {
		return err
	}
	loop, err := autoscaler.NewLoop(autoscaler.LoopConfig{
		Decide: autoscaler.Config{IdleTimeout: c.IdleTimeout},
		Fleet:  scaleTargets{fl},
		Demand: demand.Reader{Redis: c.Redis},
		Logger: log,
	})
	if err != nil {
		return err
	}
	scraper, err := demand.NewScraper(demand.ScraperConfig{Redis: c.Redis, Targets: fl.ReadyAddrs, Logger: log})
	if err != nil {
		return err
	}
	// One autoscaler acts at a time among replicas sharing this Redis.
	leader, err := lease.New(lease.Config{Redis: c.Redis, Key: "thaw:leader:autoscaler", ID: replica, Logger: log})
	if err != nil {
		return err
	}
	var live api.Live = fl
	if c.WrapLive != nil {
		live = c.WrapLive(fl)
	}
	deployAPI, err := api.New(api.Config{Store: c.Store, Live: live, GPUQuota: c.GPUQuota, Logger: log})
	if err != nil {
		return err
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		body := `{"status":"ok"`
		if c.Health != nil {
			for k, v := range c.Health() {
				body += fmt.Sprintf(",%q:%q", k, v)
			}
		}
		fmt.Fprintln(w, body+"}")
	})
	deployAPI.Register(mux, c.Users.Require)
	// This process is also the activator Envoy falls back to when no
	// replica is configured: it takes the edge's grants too.
	px.Register(mux, func(h http.Handler) http.Handler { return c.Users.RequireOrGrant(grants, h) })
	if xs != nil {
		mux.Handle(proxy.AuthzPrefix+"/", px.Authz(c.Users, grants))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		httperr.Encode(w, http.StatusNotFound, "not_found", "", fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path))
	})

	g, gctx := errgroup.WithContext(ctx)
	mln, err := operatorListener(g, gctx, c.Listen.metricsAddr, c.Telemetry.Metrics)
	if err != nil {
		return err
	}
	if c.Banner != nil {
		c.Banner(stdout, "http://"+ln.Addr().String())
	}
	if mln != nil {
		fmt.Fprintf(stdout, "  metrics (operators only): http://%s/metrics\n", mln.Addr())
	}
	serveHTTP(g, gctx, c.Listen.config(), ln, mux)
	if c.PprofAddr != "" {
		pp := &http.Server{Addr: c.PprofAddr, Handler: pprofMux(), ReadHeaderTimeout: 10 * time.Second}
		g.Go(func() error {
			if err := pp.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("pprof: %w", err)
			}
			return nil
		})
		g.Go(func() error { <-gctx.Done(); return pp.Close() })
	}
	g.Go(func() error { return reporter.Run(gctx) })
	g.Go(func() error { return scraper.Run(gctx) })
	g.Go(func() error { return demand.ListenWakes(gctx, c.Redis, loop.Wake) })
	g.Go(func() error { return c.RunRuntime(gctx) })
	g.Go(func() error { return fl.Run(gctx) })
	g.Go(func() error { return leader.Run(gctx, loop.Run) })
	if xs != nil {
		g.Go(func() error { return xs.Run(gctx) })
		g.Go(func() error { return pub.Run(gctx) })
	}
	for _, f := range c.Extra {
		g.Go(func() error { return f(gctx) })
	}
	err = g.Wait()
	log.Info(c.Name + " stopped")
	return err
}
