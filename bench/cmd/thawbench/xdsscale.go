package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/thawhq/thaw/bench"
	"github.com/thawhq/thaw/routing"
	"github.com/thawhq/thaw/xds"
)

// xdsEndpointType is EDS's type URL, the version the bench watches.
const xdsEndpointType = resource.EndpointType

// xdsConfig sizes the xds_scale scenario.
type xdsConfig struct {
	Deployments int // deployments in the xDS server, one instance each
	Changes     int // endpoint changes measured per protocol
}

// runXDSScale drives thaw's xds.Server in process with cfg.Deployments
// deployments and a real Envoy connected (state of the world, then delta),
// and times one endpoint change until thaw has pushed it and until Envoy
// has applied it.
func runXDSScale(ctx context.Context, bin string, cfg xdsConfig) bench.Result {
	res := bench.Result{
		Name:   "xds_scale",
		Target: fmt.Sprintf("snapshot push for %d deployments < 100 ms", cfg.Deployments),
		Method: fmt.Sprintf("thaw's xds.Server (the code thaw dev and thaw server run) in the bench process with %d deployments (one instance each, "+
			"SetModel + SetEndpoints), a real Envoy (--concurrency 1) connected over ADS, state of the world "+
			"and then delta. Each of %d changes adds a second instance to one deployment (SetEndpoints). "+
			"build_ms: xds.Build of the whole state, timed alone. push_ms: from SetEndpoints until the server's "+
			"endpoint version changes (rebuild + validation + hashing + SetSnapshot, which hands the response "+
			"to the open ADS stream). applied_ms: from SetEndpoints until a "+
			"request through Envoy's listener reaches the new instance (probes every ~0.5 ms, each through "+
			"ext_authz to a stand-in /authz that routes it direct to the deployment; the changed deployments' "+
			"instances are two tiny HTTP servers answering \"old\" and \"new\"; Envoy's admin stats are "+
			"not polled: with 1,000 clusters one query takes ~40 ms on Envoy's main thread, which also applies "+
			"xDS). The target is judged on applied_ms p99 "+
			"over both protocols.", cfg.Deployments, cfg.Changes),
		Figures: map[string]any{"deployments": cfg.Deployments},
	}
	st := xds.State{Listen: "127.0.0.1:1", APIs: []string{"127.0.0.1:2"}}
	for i := range cfg.Deployments {
		st.Deployments = append(st.Deployments, xds.Deployment{
			ID: depID(i), Model: "bench/" + depID(i), Capacity: 8,
			Endpoints: []xds.Endpoint{{ID: "i-" + depID(i), Addr: instAddr(i, 0)}},
		})
	}
	var builds []time.Duration
	for range 10 {
		t := time.Now()
		if _, err := xds.Build(st); err != nil {
			return failed(res, err)
		}
		builds = append(builds, time.Since(t))
	}
	res.Figures["build_ms"] = bench.Summarize(builds)

	var all []time.Duration
	for _, delta := range []bool{false, true} {
		name := "sotw"
		if delta {
			name = "delta"
		}
		fig, applied, err := xdsChanges(ctx, bin, cfg, delta)
		if err != nil {
			return failed(res, fmt.Errorf("%s: %w", name, err))
		}
		res.Figures[name] = fig
		all = append(all, applied...)
	}
	s := bench.Summarize(all)
	res.Figures["applied_p50_ms"], res.Figures["applied_p99_ms"] = s.P50Ms, s.P99Ms
	res.Status, res.Met = bench.StatusOK, s.P99Ms < 100
	sotw, dl := res.Figures["sotw"].(map[string]any), res.Figures["delta"].(map[string]any)
	res.Headline = fmt.Sprintf("build p50 %.1f ms; SotW: pushed p50 %.1f ms, Envoy applied p50 %.1f / p99 %.1f ms; "+
		"delta: pushed p50 %.1f ms, applied p50 %.1f / p99 %.1f ms",
		res.Figures["build_ms"].(bench.Summary).P50Ms,
		sotw["push_ms"].(bench.Summary).P50Ms, sotw["applied_ms"].(bench.Summary).P50Ms, sotw["applied_ms"].(bench.Summary).P99Ms,
		dl["push_ms"].(bench.Summary).P50Ms, dl["applied_ms"].(bench.Summary).P50Ms, dl["applied_ms"].(bench.Summary).P99Ms)
	return res
}

func depID(i int) string { return fmt.Sprintf("d-%04d", i) }

// instAddr is a loopback address for instance k of deployment i (nothing
// listens there: Envoy only needs it in its configuration).
func instAddr(i, k int) string { return fmt.Sprintf("127.0.%d.%d:%d", 1+k, 1+i%250, 20000+i) }

// xdsChanges runs one xds.Server and one Envoy and measures cfg.Changes
// endpoint changes.
func xdsChanges(ctx context.Context, bin string, cfg xdsConfig, delta bool) (map[string]any, []time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	listen, err := freeAddr()
	if err != nil {
		return nil, nil, err
	}
	admin, err := freeAddr()
	if err != nil {
		return nil, nil, err
	}
	api, old, nu, err := probeServers()
	if err != nil {
		return nil, nil, err
	}
	defer api.Close()
	defer old.Close()
	defer nu.Close()
	srv, err := xds.New(xds.Config{
		Listener: ln,
		Edge:     xds.State{Listen: listen, APIs: []string{api.Addr}, HoldTimeout: time.Minute},
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		ln.Close()
		return nil, nil, err
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()
	setDeployments(srv, cfg, old.Addr)
	boot, err := xds.Bootstrap(xds.BootstrapConfig{XDSAddr: ln.Addr().String(), NodeID: "bench", Admin: admin, Delta: delta})
	if err != nil {
		return nil, nil, err
	}
	e, err := startEnvoy(envoyBinFor(bin), boot, admin)
	if err != nil {
		return nil, nil, err
	}
	defer e.Stop()
	initial, err := waitApplied(ctx, e, cfg.Deployments)
	if err != nil {
		return nil, nil, err
	}
	time.Sleep(500 * time.Millisecond) // let Envoy settle (ACKs, stats)

	probe := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}, Timeout: 5 * time.Second}
	var pushes, applied []time.Duration
	probes := 0
	for k := range cfg.Changes {
		i := changed(k, cfg.Deployments)
		url := "http://" + listen + "/v1/chat/completions?d=" + depID(i)
		if got, err := probeOnce(ctx, probe, url); got != "old" {
			return nil, nil, fmt.Errorf("change %d: before the change %s answered %q, %v", k, depID(i), got, err)
		}
		push, app, n, err := measureChange(ctx, srv, probe, url, depID(i), nu.Addr)
		probes += n
		if err != nil {
			return nil, nil, fmt.Errorf("change %d: %w", k, err)
		}
		pushes, applied = append(pushes, push), append(applied, app)
		time.Sleep(50 * time.Millisecond)
	}
	nacks := srv.NACKs()
	rejected, _ := e.Stat(ctx, "cluster_manager.cds.update_rejected")
	if nacks != 0 {
		return nil, nil, fmt.Errorf("envoy rejected %d responses", nacks)
	}
	return map[string]any{
		"initial_apply_ms": bench.Ms(initial), "push_ms": bench.Summarize(pushes),
		"applied_ms": bench.Summarize(applied), "probes": probes,
		"nacks": nacks, "cds_update_rejected": rejected,
	}, applied, nil
}

// setDeployments gives srv cfg.Deployments deployments of one instance
// each; the ones the changes will touch have theirs at oldAddr.
func setDeployments(srv *xds.Server, cfg xdsConfig, oldAddr string) {
	measured := map[int]bool{}
	for k := range cfg.Changes {
		measured[changed(k, cfg.Deployments)] = true
	}
	for i := range cfg.Deployments {
		srv.SetModel(depID(i), "bench/"+depID(i))
		addr := instAddr(i, 0)
		if measured[i] {
			addr = oldAddr
		}
		srv.SetEndpoints(depID(i), 8, map[string]string{"i-" + depID(i): addr})
	}
}

// waitApplied waits until Envoy e has applied the whole configuration of n
// deployments: every deployment's cluster active with its instance. It
// returns how long that took.
func waitApplied(ctx context.Context, e *envoyProc, n int) (time.Duration, error) {
	t0 := time.Now()
	last := fmt.Sprintf("cluster.deploy-%s.membership_total", depID(n-1))
	for {
		active, err := e.Stat(ctx, "cluster_manager.active_clusters")
		m, _ := e.Stat(ctx, last)
		if err == nil && active >= int64(n+2) && m >= 2 {
			return time.Since(t0), nil
		}
		if ctx.Err() != nil {
			return 0, fmt.Errorf("envoy did not apply %d deployments (active clusters %d): %v\n%s", n, active, ctx.Err(), e.logTail())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// measureChange moves deployment id to the instance at addr and returns
// how long until srv pushed the change and until a probe of url through
// Envoy reached the new instance, with the probes it took.
func measureChange(ctx context.Context, srv *xds.Server, probe *http.Client, url, id, addr string) (push, applied time.Duration, probes int, err error) {
	v := srv.Version(xdsEndpointType)
	t := time.Now()
	srv.SetEndpoints(id, 8, map[string]string{"j-" + id: addr})
	for srv.Version(xdsEndpointType) == v {
		if time.Since(t) > 30*time.Second {
			return 0, 0, probes, fmt.Errorf("no new endpoint version within 30s (err %v)", srv.Err())
		}
		time.Sleep(50 * time.Microsecond)
	}
	push = time.Since(t)
	for {
		probes++
		got, err := probeOnce(ctx, probe, url)
		if got == "new" {
			return push, time.Since(t), probes, nil
		}
		if time.Since(t) > 30*time.Second {
			return 0, 0, probes, fmt.Errorf("Envoy still routes %s to %q after 30s: %v", id, got, err)
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// changed is the deployment the k-th change touches.
func changed(k, n int) int { return (k*97 + 13) % n }

// probeServer is a loopback HTTP server.
type probeServer struct {
	Addr string
	srv  *http.Server
}

func (p *probeServer) Close() { _ = p.srv.Close() }

func serveProbe(h http.HandlerFunc) (*probeServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &probeServer{Addr: ln.Addr().String(), srv: &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}}
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
}

// probeServers starts the stand-in for thaw's API (its /authz routes
// /v1/chat/completions?d=<id> straight to deployment <id>; anything else
// it answers "api") and the two instances.
func probeServers() (api, old, nu *probeServer, err error) {
	api, err = serveProbe(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, routing.AuthzPrefix+"/") {
			w.Header().Set(routing.DeployIDHeader, r.URL.Query().Get("d"))
			w.Header().Set(routing.RouteHeader, routing.Direct)
			return
		}
		io.WriteString(w, "api")
	})
	if err != nil {
		return nil, nil, nil, err
	}
	answer := func(s string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			io.WriteString(w, s)
		}
	}
	if old, err = serveProbe(answer("old")); err != nil {
		api.Close()
		return nil, nil, nil, err
	}
	if nu, err = serveProbe(answer("new")); err != nil {
		api.Close()
		old.Close()
		return nil, nil, nil, err
	}
	return api, old, nu, nil
}

// probeOnce posts a tiny body through Envoy and returns the answer's body.
func probeOnce(ctx context.Context, c *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader("{}"))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
	return string(b), err
}
