package proxy

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/thawhq/thaw/httperr"
)

// Target is the deployment a request resolves to.
type Target struct {
	DeployID string
	// Model is the name the model server serves ("<owner>/<model_name>").
	Model        string
	MaxBatchSize int
}

// Model is one entry of GET /v1/models.
type Model struct {
	ID      string
	Owner   string
	Created time.Time
}

// Resolver finds the caller's deployments. It must return an error wrapping
// ErrUnknownModel for a model that does not exist or that the user does not
// own: callers never learn another user's model exists.
type Resolver interface {
	Resolve(user, model string) (Target, error)
	Models(user string) []Model
}

// ErrUnknownModel is what a Resolver returns for a model the caller cannot use.
var ErrUnknownModel = errors.New("model does not exist")

// Config configures a Proxy.
type Config struct {
	Resolver Resolver
	Demand   DemandSink
	// HoldTimeout is how long a request may wait for capacity. Default 10m.
	HoldTimeout time.Duration
	// MaxHeld bounds the requests held per deployment; more get 429.
	// Default 10000 (Knative's activator queue).
	MaxHeld int
	// MaxBody bounds a request body, in bytes; larger get 413. Default 10 MiB.
	MaxBody int64
	// Transport reaches model servers. Default: a keep-alive transport sized
	// for many concurrent streams.
	Transport http.RoundTripper
	// MeterProvider and TracerProvider default to the global ones.
	MeterProvider  metric.MeterProvider
	TracerProvider trace.TracerProvider
	Logger         *slog.Logger
}

// Proxy is the activator: it identifies the model, holds requests
// while a deployment has no free capacity, and forwards them to instances
// with at most max_batch_size in flight per instance.
type Proxy struct {
	cfg    Config
	log    *slog.Logger
	rp     *httputil.ReverseProxy
	client *http.Client
	tracer trace.Tracer
	cold   metric.Float64Histogram

	// mu guards pools.
	mu    sync.Mutex
	pools map[string]*pool
}

// New returns a Proxy.
func New(cfg Config) (*Proxy, error) {
	if cfg.Resolver == nil || cfg.Demand == nil {
		return nil, errors.New("proxy: Resolver and Demand are required")
	}
	if cfg.HoldTimeout <= 0 {
		cfg.HoldTimeout = 10 * time.Minute
	}
	if cfg.MaxHeld <= 0 {
		cfg.MaxHeld = 10000
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 10 << 20
	}
	if cfg.Transport == nil {
		cfg.Transport = &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        4096,
			MaxIdleConnsPerHost: 1024,
			IdleConnTimeout:     90 * time.Second,
		}
	}
	if cfg.MeterProvider == nil {
		cfg.MeterProvider = otel.GetMeterProvider()
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = otel.GetTracerProvider()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	p := &Proxy{
		cfg:    cfg,
		log:    cfg.Logger,
		pools:  map[string]*pool{},
		tracer: cfg.TracerProvider.Tracer("github.com/thawhq/thaw/proxy"),
	}
	tr := &dialTracking{base: cfg.Transport}
	p.client = &http.Client{Transport: tr}
	p.rp = &httputil.ReverseProxy{
		Rewrite:      rewrite,
		Transport:    tr,
		ErrorHandler: p.upstreamError,
		// Error answers are rewritten into thaw's shape; others, streams
		// among them, pass untouched.
		ModifyResponse: p.modifyResponse,
		// SSE and other responses of unknown length (chunked) are flushed
		// as they come: ReverseProxy does that by itself.
	}
	if err := p.initMetrics(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Proxy) initMetrics() error {
	m := p.cfg.MeterProvider.Meter("github.com/thawhq/thaw/proxy")
	var err error
	p.cold, err = m.Float64Histogram("thaw.cold_start.duration",
		metric.WithUnit("s"),
		metric.WithDescription("How long requests that arrived at a deployment with no ready instance were held."),
		metric.WithExplicitBucketBoundaries(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 600))
	if err != nil {
		return err
	}
	held, err := m.Int64ObservableGauge("thaw.requests.held", metric.WithDescription("Requests the activator holds waiting for capacity, per deployment."))
	if err != nil {
		return err
	}
	inflight, err := m.Int64ObservableGauge("thaw.requests.inflight", metric.WithDescription("Requests the activator has in flight at instances, per deployment."))
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for id, c := range p.Counts() {
			attrs := metric.WithAttributes(attribute.String("deploy_id", id))
			o.ObserveInt64(held, int64(c.Held), attrs)
			o.ObserveInt64(inflight, int64(c.InFlight), attrs)
		}
		return nil
	}, held, inflight)
	return err
}

func (p *Proxy) pool(id string) *pool {
	p.mu.Lock()
	defer p.mu.Unlock()
	pl, ok := p.pools[id]
	if !ok {
		pl = newPool(id, p.cfg.Demand)
		p.pools[id] = pl
	}
	return pl
}

// SetEndpoints replaces a deployment's routable instances (id -> addr) with
// capacity concurrent requests each; held requests are released onto new
// capacity at once.
func (p *Proxy) SetEndpoints(deployID string, capacity int, addrs map[string]string) {
	p.pool(deployID).set(capacity, addrs)
}

// Drained returns a channel closed once the instance has left load balancing
// and has no request in flight.
// An unknown deployment (deleted meanwhile) has nothing in flight.
func (p *Proxy) Drained(deployID, instanceID string) <-chan struct{} {
	p.mu.Lock()
	pl, ok := p.pools[deployID]
	p.mu.Unlock()
	if !ok {
		c := make(chan struct{})
		close(c)
		return c
	}
	return pl.drainedCh(instanceID)
}

// Fail fails held and new requests of the deployment with reason (503).
func (p *Proxy) Fail(deployID, reason string) { p.pool(deployID).fail(reason) }

// Recover lets requests of a failed deployment wait for capacity again.
func (p *Proxy) Recover(deployID string) { p.pool(deployID).recover() }

// Refuse answers the deployment's held requests with err at once, and new
// ones until Unrefuse: its owner is over their spending limit
// (httperr.InsufficientQuota). The slots they held are given back and the
// demand reported drops. Independent of Fail: Unrefuse does not clear a
// failure, nor Recover a refusal. It does not block.
func (p *Proxy) Refuse(deployID string, err *httperr.Error) { p.pool(deployID).refuse(err) }

// Unrefuse lets requests of a refused deployment be held and served again.
func (p *Proxy) Unrefuse(deployID string) {
	p.mu.Lock()
	pl, ok := p.pools[deployID]
	p.mu.Unlock()
	if ok {
		pl.unrefuse()
	}
}

// Remove forgets a deleted deployment; its held requests get 404.
func (p *Proxy) Remove(deployID string) {
	p.mu.Lock()
	pl, ok := p.pools[deployID]
	delete(p.pools, deployID)
	p.mu.Unlock()
	if ok {
		pl.remove()
	}
}

// Load is a deployment's requests at this activator.
type Load struct {
	// Held requests wait for a free slot.
	Held int
	// InFlight requests are forwarded to an instance and not done.
	InFlight int
}

// Counts reports the Load of each deployment this activator knows.
func (p *Proxy) Counts() map[string]Load {
	pools := p.poolList()
	out := make(map[string]Load, len(pools))
	for _, pl := range pools {
		h, i := pl.counts()
		out[pl.id] = Load{Held: h, InFlight: i}
	}
	return out
}

// InstanceInflight reports requests in flight per instance (endpoint id),
// draining ones included, so that a control plane elsewhere can tell when
// this replica has drained an instance.
func (p *Proxy) InstanceInflight() map[string]int {
	out := map[string]int{}
	for _, pl := range p.poolList() {
		pl.mu.Lock()
		for id, ep := range pl.endpoints {
			if ep.inflight > 0 {
				out[id] = ep.inflight
			}
		}
		pl.mu.Unlock()
	}
	return out
}

// poolList returns the deployments' pools at this moment, so that callers
// read each pool under its own lock without holding p.mu.
func (p *Proxy) poolList() []*pool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Collect(maps.Values(p.pools))
}

// ready reports whether the deployment has a routable instance.
func (p *Proxy) ready(deployID string) bool {
	p.mu.Lock()
	pl, ok := p.pools[deployID]
	p.mu.Unlock()
	if !ok {
		return false
	}
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return pl.readyCountLocked() > 0
}
