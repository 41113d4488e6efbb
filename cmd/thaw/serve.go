package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/thawhq/thaw/httpserve"
)

// Default --metrics-addr: the port OpenTelemetry's Prometheus exporter uses
// by convention, on loopback; activators take the next one so that one
// activator can run next to a control plane with the defaults.
const (
	defaultMetricsAddr          = "127.0.0.1:9464"
	defaultActivatorMetricsAddr = "127.0.0.1:9465"
)

// listenerFlags are the public listener's connection limits (see
// httpserve) and the operators' metrics listener.
type listenerFlags struct {
	bodyTimeout time.Duration
	idleTimeout time.Duration
	metricsAddr string
}

// register adds the flags; metricsAddr is the default --metrics-addr.
func (c *listenerFlags) register(fs *flag.FlagSet, metricsAddr string) {
	fs.StringVar(&c.metricsAddr, "metrics-addr", metricsAddr, "`host:port` of the operators' listener serving GET /metrics (per-deployment and per-user series: keep it on loopback or a private network); empty: off. The public listener serves no metrics")
	fs.DurationVar(&c.bodyTimeout, "body-timeout", httpserve.DefaultBodyTimeout, "a request body that has not fully arrived this long after its headers is cut with 408 (held requests and streams are not bounded by it)")
	fs.DurationVar(&c.idleTimeout, "conn-idle-timeout", httpserve.DefaultIdleTimeout, "an idle keep-alive connection is closed after this long")
}

func (c listenerFlags) config() httpserve.Config {
	return httpserve.Config{BodyTimeout: c.bodyTimeout, IdleTimeout: c.idleTimeout}
}

// serveHTTP serves h on ln in g until gctx is done, then shuts down
// gracefully. The server speaks HTTP/1.1 and cleartext HTTP/2 (h2c) on the
// same port: an edge proxy (Envoy) multiplexes held requests over a few
// connections instead of paying a connection, and its buffers, per held
// request.
func serveHTTP(g *errgroup.Group, gctx context.Context, cfg httpserve.Config, ln net.Listener, h http.Handler) {
	g.Go(func() error { return httpserve.Serve(gctx, cfg, ln, h) })
}

// operatorListener serves what only operators may see (per-deployment and
// per-user metrics) on addr, by default on loopback; empty addr: off.
func operatorListener(g *errgroup.Group, gctx context.Context, addr string, metrics http.Handler) (net.Listener, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr %s: %w (set another address, or --metrics-addr '' to turn the metrics listener off)", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
	serveHTTP(g, gctx, httpserve.Config{}, ln, mux)
	return ln, nil
}
