package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/thawhq/thaw/auth"
	"github.com/thawhq/thaw/demand"
	"github.com/thawhq/thaw/endpoints"
	"github.com/thawhq/thaw/httperr"
	"github.com/thawhq/thaw/proxy"
	"github.com/thawhq/thaw/telemetry"
)

// runActivator runs `thaw activator`: the request holder as its own process.
// Any number of replicas share state through Redis: they learn deployments
// and ready instances from the control plane's published records, report
// demand and wake-ups to the autoscaler, and report requests in flight per
// instance so scale-down drains them too.
func runActivator(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("activator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: thaw activator --redis-addr HOST:PORT --users-file FILE [flags]\n\n"+
			"Holds requests for deployments with no free capacity and forwards them to\n"+
			"instances as they become ready. Run it behind Envoy (thaw server --xds-addr\n"+
			"--activators ...), as many replicas as you like.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	addr := fs.String("addr", "127.0.0.1:8090", "`address` to serve held requests on (HTTP/1.1 and h2c)")
	redisAddr := fs.String("redis-addr", "", "`host:port` of the Redis the control plane uses (required)")
	usersFile := fs.String("users-file", "", "users and token hashes `file`, the same as thaw server's (required)")
	holdTimeout := fs.Duration("hold-timeout", 10*time.Minute, "how long a request may wait for capacity before it gets 503")
	maxHeld := fs.Int("max-held", 10000, "requests held per deployment before new ones get 429")
	level := fs.String("log-level", "info", "log `level`: debug, info, warn, error")
	var lf listenerFlags
	lf.register(fs, defaultActivatorMetricsAddr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *redisAddr == "" || *usersFile == "" {
		fs.Usage()
		return errors.New("--redis-addr and --users-file are required")
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	slog.SetDefault(log)

	users, err := auth.LoadUsersFile(*usersFile)
	if err != nil {
		return err
	}
	tel, err := telemetry.Setup(ctx, "thaw-activator")
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tel.Shutdown(sctx)
	}()
	rdb := redis.NewClient(&redis.Options{Addr: *redisAddr})
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis at %s: %w", *redisAddr, err)
	}
	host, _ := os.Hostname()
	replica := fmt.Sprintf("activator-%s-%d", host, os.Getpid())
	reporter, err := demand.NewReporter(demand.ReporterConfig{Redis: rdb, Replica: replica, Logger: log})
	if err != nil {
		return err
	}
	sub, err := endpoints.NewSubscriber(endpoints.SubscriberConfig{Redis: rdb, Logger: log})
	if err != nil {
		return err
	}
	log.Info("waiting for the control plane's edge grant key in Redis")
	grants, err := endpoints.WaitGrants(ctx, rdb)
	if err != nil {
		return err
	}
	px, err := proxy.New(proxy.Config{Resolver: sub, Demand: reporter, HoldTimeout: *holdTimeout, MaxHeld: *maxHeld, Logger: log})
	if err != nil {
		return err
	}
	sub.SetApplier(px)
	inflight := endpoints.InflightReporter{Redis: rdb, Replica: replica, Inflight: px.InstanceInflight}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintln(w, `{"status":"ok","role":"activator"}`)
	})
	// Requests on Envoy's direct route come without the caller's token
	// (the route removes it) and with the edge's grant.
	px.Register(mux, func(h http.Handler) http.Handler { return users.RequireOrGrant(grants, h) })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		httperr.Encode(w, http.StatusNotFound, "not_found", "", fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path))
	})
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *addr, err)
	}
	g, gctx := errgroup.WithContext(ctx)
	mln, err := operatorListener(g, gctx, lf.metricsAddr, tel.Metrics)
	if err != nil {
		ln.Close()
		return err
	}
	fmt.Fprintf(stdout, "thaw activator %s is serving on http://%s (redis %s)\n", replica, ln.Addr(), *redisAddr)
	if mln != nil {
		fmt.Fprintf(stdout, "  metrics (operators only): http://%s/metrics\n", mln.Addr())
	}
	serveHTTP(g, gctx, lf.config(), ln, mux)
	g.Go(func() error { return reporter.Run(gctx) })
	g.Go(func() error { return sub.Run(gctx) })
	g.Go(func() error { return inflight.Run(gctx) })
	err = g.Wait()
	log.Info("thaw activator stopped")
	return err
}
