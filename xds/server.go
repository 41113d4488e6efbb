package xds

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/delta/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/sotw/v3"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
)

// Config configures a Server.
type Config struct {
	// Addr is where ADS is served (gRPC), e.g. "127.0.0.1:18000". Ignored
	// when Listener is set.
	Addr string
	// Listener, when set, is used instead of listening on Addr (tests pass
	// one on port 0). Run closes it.
	Listener net.Listener
	// TLS, when set, serves ADS over TLS with it: its certificate (or
	// GetCertificate) is the server's, and with ClientAuth
	// tls.RequireAndVerifyClientCert and ClientCAs an Envoy without a
	// certificate those CAs signed is refused (mutual TLS). nil: cleartext.
	TLS *tls.Config
	// Edge is the static part of the edge's state: Listen, APIs, Activators,
	// HoldTimeout. Its Deployments are ignored: they come from
	// SetEndpoints, SetModel and Remove.
	Edge State
	// EnvoyAdmin are the admin base URLs ("http://127.0.0.1:9901") of the
	// Envoys this server configures. When set, Drained waits until none of
	// them has a request in flight to the instance (Envoy's rq_active), and
	// an instance leaving SetEndpoints stays in EDS as DRAINING until then.
	// Empty: instances leave EDS at once (Envoy still finishes their
	// in-flight requests) and Drained is closed at once.
	EnvoyAdmin []string
	// DrainPoll is how often Drained polls EnvoyAdmin. Default 100ms.
	DrainPoll time.Duration
	// DrainGrace is how long an instance that left SetEndpoints stays in EDS
	// as DRAINING when no Drained call waits for it (it failed rather than
	// being scaled down). Default 1m.
	DrainGrace    time.Duration
	MeterProvider metric.MeterProvider
	Logger        *slog.Logger
}

// Server serves the edge's configuration over ADS and rebuilds it when
// deployments or their endpoints change. Its SetEndpoints, Drained, Fail,
// Recover and Remove methods have the shape of the fleet's Endpoints, so the
// fleet can feed it next to the activator.
type Server struct {
	cfg   Config
	log   *slog.Logger
	cache cache.SnapshotCache
	http  *http.Client

	nacks     atomic.Int64
	nackCount metric.Int64Counter
	kick      chan struct{}
	stop      chan struct{}
	stopOnce  sync.Once

	// mu guards deployments, drains, nodes, version, versions and buildErr.
	mu          sync.Mutex
	deployments map[string]*Deployment
	drains      map[drainKey]*drainState
	nodes       map[int64]string  // stream id -> Envoy node id
	version     string            // of the last push, all types
	versions    map[string]string // type URL -> version, of the last push
	buildErr    error
}

// nodeKey is the cache key every Envoy maps to: all edges get one
// configuration, whatever their node id.
const nodeKey = "thaw-edge"

type allNodes struct{}

func (allNodes) ID(*core.Node) string { return nodeKey }

// New returns a Server; Run serves it.
func New(cfg Config) (*Server, error) {
	if cfg.Addr == "" && cfg.Listener == nil {
		return nil, errors.New("xds: Addr or Listener is required")
	}
	if cfg.Edge.Listen == "" || len(cfg.Edge.APIs) == 0 {
		return nil, errors.New("xds: Edge.Listen and Edge.APIs are required")
	}
	if cfg.DrainPoll <= 0 {
		cfg.DrainPoll = 100 * time.Millisecond
	}
	if cfg.DrainGrace <= 0 {
		cfg.DrainGrace = time.Minute
	}
	if cfg.MeterProvider == nil {
		cfg.MeterProvider = otel.GetMeterProvider()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{
		cfg:         cfg,
		log:         cfg.Logger,
		http:        &http.Client{Timeout: 2 * time.Second},
		kick:        make(chan struct{}, 1),
		stop:        make(chan struct{}),
		deployments: map[string]*Deployment{},
		drains:      map[drainKey]*drainState{},
		nodes:       map[int64]string{},
	}
	s.cache = cache.NewSnapshotCache(true, allNodes{}, cacheLogger{s.log})
	m := cfg.MeterProvider.Meter("github.com/thawhq/thaw/xds")
	var err error
	if s.nackCount, err = m.Int64Counter("thaw.xds.nacks",
		metric.WithDescription("xDS responses Envoy rejected (NACK), by resource type.")); err != nil {
		return nil, err
	}
	// The first snapshot (no deployment yet) is built now, so an Envoy that
	// connects before any change gets a configuration.
	if err := s.rebuild(context.Background()); err != nil {
		return nil, err
	}
	return s, nil
}

// Run serves ADS until ctx is done, pushing a new snapshot after each change.
func (s *Server) Run(ctx context.Context) error {
	defer s.stopOnce.Do(func() { close(s.stop) })
	ln := s.cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", s.cfg.Addr); err != nil {
			return fmt.Errorf("xds: listen on %s: %w", s.cfg.Addr, err)
		}
	}
	opts := []grpc.ServerOption{
		grpc.MaxConcurrentStreams(1000),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 5 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 15 * time.Second, PermitWithoutStream: true}),
	}
	security := "cleartext"
	if s.cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(s.cfg.TLS)))
		security = "tls"
		if s.cfg.TLS.ClientAuth == tls.RequireAndVerifyClientCert {
			security = "mutual tls"
		}
	}
	gs := grpc.NewServer(opts...)
	cb := callbacks{s}
	discovery.RegisterAggregatedDiscoveryServiceServer(gs, &ads{
		sotw:  sotw.NewServer(ctx, s.cache, cb),
		delta: delta.NewServer(ctx, s.cache, cb),
	})
	s.log.Info("xds: serving ADS", "addr", ln.Addr().String(), "security", security)
	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(ln) }()
	for {
		select {
		case <-ctx.Done():
			gs.Stop()
			<-errc
			return nil
		case err := <-errc:
			return fmt.Errorf("xds: serve: %w", err)
		case <-s.kick:
			// Errors are logged and kept for Err; the last good snapshot stays.
			_ = s.rebuild(ctx)
		}
	}
}

// state is the current State. Called with mu held.
func (s *Server) stateLocked() State {
	st := s.cfg.Edge
	st.Deployments = make([]Deployment, 0, len(s.deployments))
	for _, d := range s.deployments {
		st.Deployments = append(st.Deployments, *d)
	}
	return st
}

func (s *Server) rebuild(ctx context.Context) error {
	s.mu.Lock()
	st := s.stateLocked()
	s.mu.Unlock()
	snap, err := Build(st)
	if err == nil {
		err = s.cache.SetSnapshot(ctx, nodeKey, snap)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buildErr = err
	if err != nil {
		s.log.Error("xds: configuration not pushed", "err", err)
		return err
	}
	if v := snap.GetVersion(resource.ListenerType) + snap.GetVersion(resource.RouteType) + snap.GetVersion(resource.ClusterType) + snap.GetVersion(resource.EndpointType); v != s.version {
		s.version = v
		s.versions = map[string]string{}
		for _, typ := range []string{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType} {
			s.versions[typ] = snap.GetVersion(typ)
		}
		s.log.Debug("xds: snapshot pushed", "versions", s.versions, "deployments", len(st.Deployments))
	}
	return nil
}

func (s *Server) changed() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// SetEndpoints replaces the deployment's instances in load balancing (id ->
// addr). With EnvoyAdmin set, instances that leave stay in EDS as DRAINING
// until Drained sees them idle (or for DrainGrace when nobody asks).
func (s *Server) SetEndpoints(deployID string, capacity int, addrs map[string]string) {
	s.mu.Lock()
	d := s.deploymentLocked(deployID)
	d.Capacity = capacity
	old := d.Endpoints
	d.Endpoints = d.Endpoints[:0:0]
	for id, addr := range addrs {
		d.Endpoints = append(d.Endpoints, Endpoint{ID: id, Addr: addr})
		delete(s.drains, drainKey{deployID, id}) // back in service
	}
	if len(s.cfg.EnvoyAdmin) > 0 {
		for _, e := range old {
			if _, ok := addrs[e.ID]; ok {
				continue
			}
			k := drainKey{deployID, e.ID}
			ds := s.drains[k]
			switch {
			case ds != nil && ds.done:
				delete(s.drains, k) // Drained already saw it idle
				continue
			case ds == nil:
				ds = &drainState{}
				s.drains[k] = ds
			}
			if !e.Draining {
				e.Draining = true
				time.AfterFunc(s.cfg.DrainGrace, func() { s.expireDrain(k, ds) })
			}
			d.Endpoints = append(d.Endpoints, e)
		}
	}
	sort.Slice(d.Endpoints, func(i, j int) bool { return d.Endpoints[i].ID < d.Endpoints[j].ID })
	d.Failed = false
	s.mu.Unlock()
	s.changed()
}

// SetModel records the deployment's model name ("<owner>/<name>"), shown in
// its route's metadata, and gives it a route before its first instance. The
// same name again changes nothing.
func (s *Server) SetModel(deployID, model string) {
	s.mu.Lock()
	d, ok := s.deployments[deployID]
	if ok && d.Model == model {
		s.mu.Unlock()
		return
	}
	s.deploymentLocked(deployID).Model = model
	s.mu.Unlock()
	s.changed()
}

// deploymentLocked returns the deployment, adding it. Called with mu held.
func (s *Server) deploymentLocked(id string) *Deployment {
	d, ok := s.deployments[id]
	if !ok {
		d = &Deployment{ID: id}
		s.deployments[id] = d
	}
	return d
}

// Fail sends the deployment's requests to the activator, which fails them
// at once with the reason; SetEndpoints or Recover ends it.
func (s *Server) Fail(deployID, _ string) {
	s.mu.Lock()
	s.deploymentLocked(deployID).Failed = true
	s.mu.Unlock()
	s.changed()
}

// Recover ends Fail.
func (s *Server) Recover(deployID string) {
	s.mu.Lock()
	s.deploymentLocked(deployID).Failed = false
	s.mu.Unlock()
	s.changed()
}

// Remove deletes the deployment's route and cluster: its requests reach the
// activator, which answers 404.
func (s *Server) Remove(deployID string) {
	s.mu.Lock()
	delete(s.deployments, deployID)
	for k := range s.drains {
		if k.deploy == deployID {
			delete(s.drains, k)
		}
	}
	s.mu.Unlock()
	s.changed()
}

// NACKs is how many responses Envoy rejected since the server started.
func (s *Server) NACKs() int64 { return s.nacks.Load() }

// Version is the version of typeURL's resources (resource.EndpointType, ...)
// in the last snapshot pushed.
func (s *Server) Version(typeURL string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.versions[typeURL]
}

// Err is the error of the last rebuild, nil when the last state was pushed.
func (s *Server) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buildErr
}

// Nodes lists the node ids of the Envoys connected now.
func (s *Server) Nodes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[string]bool{}
	var out []string
	for _, n := range s.nodes {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// WaitForNode waits until an Envoy with node id has connected.
func (s *Server) WaitForNode(ctx context.Context, id string) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		for _, n := range s.Nodes() {
			if n == id {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("xds: node %q did not connect: %w", id, ctx.Err())
		case <-t.C:
		}
	}
}

// cacheLogger routes go-control-plane's logs to slog (its debug chatter at
// debug level).
type cacheLogger struct{ l *slog.Logger }

func (c cacheLogger) Debugf(f string, a ...any) { c.l.Debug("xds cache: " + fmt.Sprintf(f, a...)) }
func (c cacheLogger) Infof(f string, a ...any)  { c.l.Debug("xds cache: " + fmt.Sprintf(f, a...)) }
func (c cacheLogger) Warnf(f string, a ...any)  { c.l.Warn("xds cache: " + fmt.Sprintf(f, a...)) }
func (c cacheLogger) Errorf(f string, a ...any) { c.l.Error("xds cache: " + fmt.Sprintf(f, a...)) }
