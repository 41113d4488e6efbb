// Package envoy_test runs thaw's Envoy data plane end to end: a real Envoy
// (bin/envoy, installed by scripts/envoy.sh) configured only by the xds
// package's ADS server, thaw's /authz and activator (the proxy package), and
// simulated model servers (the sim package, what `thaw sim` runs).
package envoy_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/thawhq/thaw/test/e2e"

	"github.com/thawhq/thaw/auth"
	"github.com/thawhq/thaw/httperr"
	"github.com/thawhq/thaw/proxy"
	"github.com/thawhq/thaw/routing"
	"github.com/thawhq/thaw/sim"
	"github.com/thawhq/thaw/xds"
)

// Deployments every edge knows. alice owns warm, cold and slow; bob owns
// bobs (no instance ever).
var deployments = map[string]proxy.Target{
	"alice/warm": {DeployID: "d-warm", Model: "alice/warm", MaxBatchSize: 8},
	"alice/cold": {DeployID: "d-cold", Model: "alice/cold", MaxBatchSize: 8},
	"alice/slow": {DeployID: "d-slow", Model: "alice/slow", MaxBatchSize: 8},
	"bob/bobs":   {DeployID: "d-bobs", Model: "bob/bobs", MaxBatchSize: 8},
}

type resolver struct{}

func (resolver) Resolve(user, model string) (proxy.Target, error) {
	for name, t := range deployments {
		owner, _, _ := strings.Cut(name, "/")
		if owner == user && (model == name || model == "deploy_id:"+t.DeployID) {
			return t, nil
		}
	}
	return proxy.Target{}, fmt.Errorf("%w: %s", proxy.ErrUnknownModel, model)
}

func (resolver) Models(string) []proxy.Model { return nil }

type noDemand struct{}

func (noDemand) Set(string, int, int) {}
func (noDemand) Wake(string)          {}

// counter counts the inference requests a server received.
type counter struct {
	h http.Handler
	n atomic.Int64
}

func (c *counter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		c.n.Add(1)
	}
	c.h.ServeHTTP(w, r)
}

// edge is one Envoy in front of thaw's pieces.
type edge struct {
	xs        *xds.Server
	px        *proxy.Proxy
	activator *counter
	url       string // Envoy's listener
	admin     string // Envoy's admin
	client    *http.Client

	// mu guards addrs.
	mu    sync.Mutex
	addrs map[string]string // deploy id -> its one instance
}

const holdTimeout = time.Minute

// envoyBin is bin/envoy; without it the test fails in CI and is skipped
// elsewhere.
func envoyBin(t *testing.T) string {
	t.Helper()
	bin, err := e2e.EnvoyBin()
	e2e.Need(t, err)
	return bin
}

func freeAddr(t *testing.T) string { return e2e.FreeAddrT(t) }

// startEdge starts the activator, thaw's API (/authz), the xDS server and
// Envoy (state of the world, or delta xDS).
func startEdge(t *testing.T, delta bool) *edge {
	t.Helper()
	bin := envoyBin(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &edge{addrs: map[string]string{}}
	users := auth.NewUsers(map[string]string{"alice": "tok-alice", "bob": "tok-bob"})
	px, err := proxy.New(proxy.Config{Resolver: resolver{}, Demand: noDemand{}, HoldTimeout: holdTimeout, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	e.px = px

	grants, err := auth.NewGrants(auth.NewGrantKey())
	if err != nil {
		t.Fatal(err)
	}
	actMux := http.NewServeMux()
	px.Register(actMux, func(h http.Handler) http.Handler { return users.RequireOrGrant(grants, h) })
	e.activator = &counter{h: actMux}
	act := httptest.NewServer(e.activator)
	t.Cleanup(act.Close)

	apiMux := http.NewServeMux()
	apiMux.Handle(routing.AuthzPrefix+"/", px.Authz(users, grants))
	apiMux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintln(w, `{"status":"ok"}`)
	})
	apiMux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		httperr.Encode(w, http.StatusNotFound, "not_found", "", "no route for "+r.Method+" "+r.URL.Path)
	})
	api := httptest.NewServer(apiMux)
	t.Cleanup(api.Close)

	listen, admin := freeAddr(t), freeAddr(t)
	xln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.admin = "http://" + admin
	e.xs, err = xds.New(xds.Config{
		Listener: xln,
		Edge: xds.State{
			Listen: listen, APIs: []string{strings.TrimPrefix(api.URL, "http://")},
			Activators: []string{strings.TrimPrefix(act.URL, "http://")}, HoldTimeout: holdTimeout,
		},
		EnvoyAdmin: []string{e.admin},
		Logger:     log,
	})
	if err != nil {
		t.Fatal(err)
	}
	xsDone := make(chan error, 1)
	go func() { xsDone <- e.xs.Run(ctx) }()
	for name, tg := range deployments {
		e.xs.SetModel(tg.DeployID, name)
	}

	nodeID := fmt.Sprintf("edge-%s-%v", t.Name(), delta)
	boot, err := xds.Bootstrap(xds.BootstrapConfig{XDSAddr: xln.Addr().String(), NodeID: nodeID, Admin: admin, Delta: delta})
	if err != nil {
		t.Fatal(err)
	}
	// Registered before Envoy's cleanup, so it runs after Envoy stopped.
	t.Cleanup(func() { cancel(); <-xsDone })
	e2e.StartEnvoyT(t, e2e.EnvoyConfig{Bin: bin, Bootstrap: boot, Admin: admin, Dir: t.TempDir()})
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Cleanup(tr.CloseIdleConnections)
	e.client = &http.Client{Transport: tr, Timeout: 2 * time.Minute}
	e.url = "http://" + listen

	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	if err := e.xs.WaitForNode(wctx, nodeID); err != nil {
		t.Fatal(err)
	}
	e.waitHealthy(wctx, t)
	return e
}

// waitHealthy waits until GET /healthz through the edge answers 200: Envoy
// has its listener and routes, and thaw's API behind it answers.
func (e *edge) waitHealthy(ctx context.Context, t *testing.T) {
	t.Helper()
	e.waitFor(ctx, t, "edge /healthz 200", func() bool {
		resp, err := e.client.Get(e.url + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// waitFor polls cond every 20ms until it holds or ctx ends (fatal).
func (e *edge) waitFor(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	if !e2e.EventuallyCtx(ctx, 20*time.Millisecond, cond) {
		t.Fatalf("%s: not within the deadline", what)
	}
}

// startInstance starts a simulated model server for deployment model and
// makes it ready on both the activator and Envoy, as the fleet does.
func (e *edge) startInstance(t *testing.T, model string, tokensPerSecond float64) *counter {
	t.Helper()
	tg := deployments[model]
	s, err := sim.New(sim.Config{Model: model, TokensPerSecond: tokensPerSecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	c := &counter{h: s.Handler()}
	srv := httptest.NewServer(c)
	t.Cleanup(srv.Close)
	addrs := map[string]string{"i-" + tg.DeployID: strings.TrimPrefix(srv.URL, "http://")}
	e.px.SetEndpoints(tg.DeployID, tg.MaxBatchSize, addrs)
	e.xs.SetEndpoints(tg.DeployID, tg.MaxBatchSize, addrs)
	e.mu.Lock()
	e.addrs[tg.DeployID] = addrs["i-"+tg.DeployID]
	e.mu.Unlock()
	return c
}

// waitRoutable waits until Envoy has the deployment's instances in load
// balancing (the push is asynchronous).
func (e *edge) waitRoutable(t *testing.T, deployID string) {
	t.Helper()
	e.mu.Lock()
	addr := e.addrs[deployID]
	e.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e.waitFor(ctx, t, "instance of "+deployID+" in envoy", func() bool {
		return e.hostFlags(t, "deploy-"+deployID, addr) == "healthy"
	})
}

// envoyAdmin reads Envoy's admin interface with the edge's client.
func (e *edge) envoyAdmin() e2e.EnvoyAdmin { return e2e.EnvoyAdmin{URL: e.admin, HTTP: e.client} }

// hostFlags is the health_flags Envoy's /clusters reports for the host, ""
// when Envoy does not list it.
func (e *edge) hostFlags(t *testing.T, cluster, addr string) string {
	t.Helper()
	return e.hostsWith(t, cluster, "health_flags")[addr]
}

// hostsWith maps each host of the cluster to the value of stat.
func (e *edge) hostsWith(t *testing.T, cluster, stat string) map[string]string {
	t.Helper()
	hosts, err := e.envoyAdmin().HostStats(context.Background(), cluster, stat)
	if err != nil {
		t.Fatal(err)
	}
	return hosts
}

// stat reads one counter or gauge from Envoy's admin; -1 when absent.
func (e *edge) stat(t *testing.T, name string) int {
	t.Helper()
	n, err := e.envoyAdmin().Stat(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return int(n)
}

// statsContaining is every stat whose name contains part.
func (e *edge) statsContaining(t *testing.T, part string) map[string]int64 {
	t.Helper()
	stats, err := e.envoyAdmin().Stats(context.Background(), part)
	if err != nil {
		t.Fatal(err)
	}
	return stats
}

// reply is what a client of the edge saw.
type reply struct {
	status int
	header http.Header
	body   string
}

// post sends a JSON body through Envoy with token ("" = none) and extra
// headers (name, value pairs).
func (e *edge) post(t *testing.T, path, token, body string, headers ...string) reply {
	t.Helper()
	r := e2e.SendT(t, e.client, http.MethodPost, e.url+path, token, []byte(body), headers...)
	return reply{r.Status, r.Header, string(r.Body)}
}

func TestMain(m *testing.M) { os.Exit(e2e.Main(m)) }
