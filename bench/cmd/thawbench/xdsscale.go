package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/thawhq/thaw/bench"
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
		Method: fmt.Sprintf("thaw's xds.Server in the bench process with %d deployments (one instance each, "+
			"SetModel + SetEndpoints), a real Envoy (--concurrency 1) connected over ADS, state of the world "+
			"and then delta. Each of %d changes adds a second instance to one deployment (SetEndpoints). "+
			"build_ms: xds.Build of the whole state, timed alone. push_ms: from SetEndpoints until the server's "+
			"endpoint version changes (rebuild + validation + hashing + SetSnapshot, which hands the response "+
			"to the open ADS stream). applied_ms: from SetEndpoints until Envoy's "+
			"cluster.deploy-<id>.membership_total counts the new instance (polled on Envoy's admin; "+
			"stat_query_ms is one poll's cost, the resolution, and Envoy's main thread both answers admin and applies xDS, so a poll under way delays the apply; applied_poll_start_ms is the start of the poll that saw it). The target is judged on applied_ms p99 "+
			"over both protocols.", cfg.Deployments, cfg.Changes),
		Figures: map[string]any{"deployments": cfg.Deployments},
	}
	st := xds.State{Listen: "127.0.0.1:1", API: "127.0.0.1:2"}
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
	srv, err := xds.New(xds.Config{
		Listener: ln,
		Edge:     xds.State{Listen: listen, API: "127.0.0.1:2", HoldTimeout: time.Minute},
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		ln.Close()
		return nil, nil, err
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for i := range cfg.Deployments {
		srv.SetModel(depID(i), "bench/"+depID(i))
		srv.SetEndpoints(depID(i), 8, map[string]string{"i-" + depID(i): instAddr(i, 0)})
	}
	boot, err := xds.Bootstrap(xds.BootstrapConfig{XDSAddr: ln.Addr().String(), NodeID: "bench", Admin: admin, Delta: delta})
	if err != nil {
		return nil, nil, err
	}
	e, err := startEnvoy(envoyBinFor(bin), boot, admin)
	if err != nil {
		return nil, nil, err
	}
	defer e.Stop()
	// The whole configuration applied: every deployment's cluster active
	// with its instance.
	t0 := time.Now()
	last := fmt.Sprintf("cluster.deploy-%s.membership_total", depID(cfg.Deployments-1))
	for {
		n, err := e.Stat(ctx, "cluster_manager.active_clusters")
		m, _ := e.Stat(ctx, last)
		if err == nil && n >= int64(cfg.Deployments+2) && m >= 2 {
			break
		}
		if ctx.Err() != nil {
			return nil, nil, fmt.Errorf("envoy did not apply %d deployments (active clusters %d): %v\n%s", cfg.Deployments, n, ctx.Err(), e.logTail())
		}
		time.Sleep(10 * time.Millisecond)
	}
	initial := time.Since(t0)
	time.Sleep(500 * time.Millisecond) // let Envoy settle (ACKs, stats)

	var pushes, applied, seenFrom, queries []time.Duration
	for k := range cfg.Changes {
		i := (k*97 + 13) % cfg.Deployments
		stat := fmt.Sprintf("cluster.deploy-%s.membership_total", depID(i))
		q := time.Now()
		before, err := e.Stat(ctx, stat)
		if err != nil || before < 1 {
			return nil, nil, fmt.Errorf("%s = %d, %v", stat, before, err)
		}
		queries = append(queries, time.Since(q))
		v := srv.Version(xdsEndpointType)
		t := time.Now()
		srv.SetEndpoints(depID(i), 8, map[string]string{"i-" + depID(i): instAddr(i, 0), "j-" + depID(i): instAddr(i, 1)})
		for srv.Version(xdsEndpointType) == v {
			if time.Since(t) > 30*time.Second {
				return nil, nil, fmt.Errorf("change %d: no new endpoint version within 30s (err %v)", k, srv.Err())
			}
			time.Sleep(50 * time.Microsecond)
		}
		pushes = append(pushes, time.Since(t))
		for {
			q := time.Now()
			n, err := e.Stat(ctx, stat)
			if err == nil && n > before {
				seenFrom = append(seenFrom, q.Sub(t))
				break
			}
			if time.Since(t) > 30*time.Second {
				return nil, nil, fmt.Errorf("change %d: envoy's %s still %d after 30s: %v", k, stat, n, err)
			}
		}
		applied = append(applied, time.Since(t))
		time.Sleep(50 * time.Millisecond)
	}
	nacks := srv.NACKs()
	rejected, _ := e.Stat(ctx, "cluster_manager.cds.update_rejected")
	if nacks != 0 {
		return nil, nil, fmt.Errorf("envoy rejected %d responses", nacks)
	}
	return map[string]any{
		"initial_apply_ms": bench.Ms(initial), "push_ms": bench.Summarize(pushes),
		"applied_ms": bench.Summarize(applied), "applied_poll_start_ms": bench.Summarize(seenFrom), "stat_query_ms": bench.Summarize(queries),
		"nacks": nacks, "cds_update_rejected": rejected,
	}, applied, nil
}
