package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/thawhq/thaw/auth"
	"github.com/thawhq/thaw/httperr"
	"github.com/thawhq/thaw/httpserve"
	"github.com/thawhq/thaw/telemetry"
)

// Default --metrics-addr: the port OpenTelemetry's Prometheus exporter uses
// by convention, on loopback; activators take the next one so that one
// activator can run next to a control plane with the defaults.
const (
	defaultMetricsAddr          = "127.0.0.1:9464"
	defaultActivatorMetricsAddr = "127.0.0.1:9465"
)

// processFlags are the flags every long-running command (dev, server,
// activator) shares: the log level, the public listener's connection limits
// (see httpserve) and the operators' listener.
type processFlags struct {
	logLevel    string
	level       slog.Level // logLevel, parsed by parseLevel
	metricsAddr string
	listen      httpserve.Config
}

// register adds the flags; metricsAddr is the default --metrics-addr.
func (f *processFlags) register(fs *flag.FlagSet, metricsAddr string) {
	fs.StringVar(&f.logLevel, "log-level", "info", "log `level`: debug, info, warn, error")
	fs.StringVar(&f.metricsAddr, "metrics-addr", metricsAddr, "`host:port` of the operators' listener serving GET /metrics (per-deployment and per-user series: keep it on loopback or a private network); empty: off. The public listener serves no metrics")
	fs.DurationVar(&f.listen.BodyTimeout, "body-timeout", httpserve.DefaultBodyTimeout, "a request body that has not fully arrived this long after its headers is cut with 408 (held requests and streams are not bounded by it)")
	fs.DurationVar(&f.listen.IdleTimeout, "conn-idle-timeout", httpserve.DefaultIdleTimeout, "an idle keep-alive connection is closed after this long")
}

// parseLevel parses --log-level; commands call it where they check their
// other flags.
func (f *processFlags) parseLevel() error {
	if err := f.level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	return nil
}

// processConfig configures startProcess.
type processConfig struct {
	// Service names the process in telemetry: "thaw-dev".
	Service string
	Flags   processFlags
	// Redis is the Redis holding demand and wake signals (address, TLS,
	// AUTH). No address with EmbeddedRedis: one runs inside the process,
	// on loopback, in cleartext (thaw dev).
	Redis         redisFlags
	EmbeddedRedis bool
	// UsersFile, when set, is the operator's users and token hashes file
	// (auth.LoadUsersFile), loaded into process.Users.
	UsersFile string
	// Stderr receives the logs.
	Stderr io.Writer
}

// process is what every long-running command starts with: the logger,
// telemetry, a Redis that answers, and the operators' listener. close gives
// them back.
type process struct {
	Log       *slog.Logger
	Telemetry *telemetry.Telemetry
	Redis     *redis.Client
	// Users are processConfig.UsersFile's users; nil without one.
	Users *auth.Users
	// usersFile is processConfig.UsersFile, which watchUsers follows.
	usersFile string
	// metrics is the operators' listener; nil with --metrics-addr ''.
	metrics net.Listener
	closers []func() // run last first by close
}

// startProcess sets up the logger (also slog's default), telemetry and
// Redis (pinged), opens the operators' listener, which serve serves, and
// loads the users file. On error what was set up is given back.
func startProcess(ctx context.Context, cfg processConfig) (_ *process, err error) {
	p := &process{Log: slog.New(slog.NewTextHandler(cfg.Stderr, &slog.HandlerOptions{Level: cfg.Flags.level}))}
	slog.SetDefault(p.Log)
	defer func() {
		if err != nil {
			p.close()
		}
	}()
	if p.Telemetry, err = telemetry.Setup(ctx, cfg.Service); err != nil {
		return nil, err
	}
	p.closers = append(p.closers, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Telemetry.Shutdown(sctx)
	})
	rc := cfg.Redis
	if rc.addr == "" && cfg.EmbeddedRedis {
		if rc.caFile != "" || rc.password != "" {
			return nil, errors.New("--redis-ca and --redis-password are for the Redis of --redis-addr, not the embedded one")
		}
		mr := miniredis.NewMiniRedis()
		if err := mr.StartAddr("127.0.0.1:0"); err != nil {
			return nil, fmt.Errorf("embedded redis: %w", err)
		}
		p.closers = append(p.closers, mr.Close)
		rc = redisFlags{addr: mr.Addr()}
	}
	if p.Redis, err = rc.newRedisClient(); err != nil {
		return nil, err
	}
	p.closers = append(p.closers, func() { _ = p.Redis.Close() })
	if err := p.Redis.Ping(ctx).Err(); err != nil {
		return nil, fmt.Errorf("redis at %s: %w", rc.redacted(), err)
	}
	if addr := cfg.Flags.metricsAddr; addr != "" {
		if p.metrics, err = net.Listen("tcp", addr); err != nil {
			return nil, fmt.Errorf("--metrics-addr %s: %w (set another address, or --metrics-addr '' to turn the metrics listener off)", addr, err)
		}
		// Serve closes it too; a second Close is harmless.
		p.closers = append(p.closers, func() { _ = p.metrics.Close() })
	}
	if cfg.UsersFile != "" {
		if p.Users, err = auth.LoadUsersFile(cfg.UsersFile); err != nil {
			return nil, err
		}
		p.usersFile = cfg.UsersFile
	}
	return p, nil
}

// close gives back what startProcess set up, last first.
func (p *process) close() {
	for _, f := range slices.Backward(p.closers) {
		f()
	}
}

// commandConfig is the parsed configuration of a long-running command.
type commandConfig interface {
	// processConfig says how to start the command's process; Stderr is
	// set by parseAndStart.
	processConfig() processConfig
}

// parseAndStart parses a long-running command's flags with parse, then
// starts its process (startProcess). The caller closes the process.
func parseAndStart[C commandConfig](ctx context.Context, args []string, stderr io.Writer, parse func([]string, io.Writer) (C, error)) (C, *process, error) {
	cfg, err := parse(args, stderr)
	if err != nil {
		return cfg, nil, err
	}
	pc := cfg.processConfig()
	pc.Stderr = stderr
	p, err := startProcess(ctx, pc)
	return cfg, p, err
}

// printServing prints the first lines of the banner of a command serving
// the deploy API and the OpenAI-compatible endpoint at base.
func printServing(w io.Writer, name, base string) {
	fmt.Fprintf(w, "%s is serving on %s\n", name, base)
	fmt.Fprintf(w, "  console:     %s/\n  deploy API:  %s/deploy/llm\n  OpenAI base: %s/v1/openai\n", base, base, base)
}

// serve runs components until ctx is done or one of them fails, with the
// operators' listener serving what only operators may see (per-deployment
// and per-user metrics). banner prints where the command serves; the
// components' listeners are open by then. name is the command, for the log.
func (p *process) serve(ctx context.Context, stdout io.Writer, name string, banner func(io.Writer), components ...func(context.Context) error) error {
	g, gctx := errgroup.WithContext(ctx)
	banner(stdout)
	if p.metrics != nil {
		fmt.Fprintf(stdout, "  metrics (operators only): http://%s/metrics\n", p.metrics.Addr())
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", p.Telemetry.Metrics)
		g.Go(func() error { return httpserve.Serve(gctx, httpserve.Config{}, p.metrics, mux) })
	}
	for _, run := range components {
		g.Go(func() error { return run(gctx) })
	}
	err := g.Wait()
	p.Log.Info(name + " stopped")
	return err
}

// newPublicMux returns the public listener's mux with GET /healthz, whose
// JSON body is {"status":"ok"} plus health's fields (when health is set), and
// an OpenAI-shaped 404 for every path nothing else is registered on. With
// fallback set, those paths go to fallback instead, which gets the 404
// handler to answer what it does not serve (the web console does).
func newPublicMux(health func() map[string]string, fallback func(notFound http.Handler) http.Handler) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		body := `{"status":"ok"`
		if health != nil {
			fields := health()
			for _, k := range slices.Sorted(maps.Keys(fields)) {
				body += fmt.Sprintf(",%q:%q", k, fields[k])
			}
		}
		fmt.Fprintln(w, body+"}")
	})
	var notFound http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httperr.Encode(w, http.StatusNotFound, "not_found", "", fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path))
	})
	if fallback != nil {
		notFound = fallback(notFound)
	}
	mux.Handle("/", notFound)
	return mux
}

// listen opens the public listener on addr.
func listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return ln, nil
}
