package envoy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/test/e2e"
	"github.com/thawhq/thaw/xds"
)

// failoverBound is how long Envoy may take to resume from the other xDS
// replica once the one it talks to is gone. Measured on loopback: 22 to
// 519 ms over 20 failovers, Envoy's jittered retry backoff (0.5 s base);
// the bound leaves room for a retry that dials the dead replica first.
const failoverBound = 10 * time.Second

// xdsReplica is one thaw server replica's xDS server.
type xdsReplica struct {
	xs   *xds.Server
	addr string
	stop func() // ends Run and waits for it: the replica is gone
}

// startReplica runs an xDS server with the edge state every replica shares
// and the same deployment, learnt in its own order (reverse: the events
// backwards).
func startReplica(t *testing.T, edge xds.State, instance string, reverse bool) *xdsReplica {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	xs, err := xds.New(xds.Config{Listener: ln, Edge: edge, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	events := []func(){
		func() { xs.SetModel("d-warm", "alice/warm") },
		func() { xs.SetEndpoints("d-warm", 8, map[string]string{"i-warm": instance}) },
		func() { xs.SetModel("d-cold", "alice/cold") },
	}
	for i := range events {
		if reverse {
			i = len(events) - 1 - i
		}
		events[i]()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- xs.Run(ctx) }()
	var stopped atomic.Bool
	r := &xdsReplica{xs: xs, addr: ln.Addr().String(), stop: func() {
		if stopped.CompareAndSwap(false, true) {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("xds replica %s: %v", ln.Addr(), err)
			}
		}
	}}
	t.Cleanup(r.stop)
	return r
}

// connected reports whether Envoy's ADS stream is on r.
func (r *xdsReplica) connected(node string) bool {
	for _, n := range r.xs.Nodes() {
		if n == node {
			return true
		}
	}
	return false
}

// xdsStats are Envoy's stats that move when it applies, rejects or changes
// configuration.
var xdsStats = []string{
	"listener_manager.lds.update_rejected", "cluster_manager.cds.update_rejected",
	"http.thaw.rds.thaw-routes.update_rejected", "cluster.deploy-d-warm.update_rejected",
	"http.thaw.rds.thaw-routes.version",
	"listener_manager.listener_added", "listener_manager.listener_modified", "listener_manager.listener_removed",
	"listener_manager.total_listeners_draining",
	"cluster_manager.cluster_added", "cluster_manager.cluster_modified", "cluster_manager.cluster_removed",
	"http.thaw.rds.thaw-routes.config_reload",
}

// TestXDSFailover: Envoy bootstrapped with two xDS replicas that hold the
// same state keeps serving when the replica it talks to dies, resumes from
// the other within failoverBound, and is sent nothing it rejects or that
// changes a listener, route or cluster: the configuration it dumps is the
// same before and after, and requests answer 200 throughout.
func TestXDSFailover(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(map[bool]string{false: "sotw", true: "delta"}[delta], func(t *testing.T) { testXDSFailover(t, delta) })
	}
}

func testXDSFailover(t *testing.T, delta bool) {
	bin := envoyBin(t)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, `{"status":"ok"}`)
	}))
	t.Cleanup(api.Close)
	inst := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(inst.Close)
	listen, admin := freeAddr(t), freeAddr(t)
	edgeState := xds.State{Listen: listen, APIs: []string{strings.TrimPrefix(api.URL, "http://")}, HoldTimeout: time.Minute}
	instance := strings.TrimPrefix(inst.URL, "http://")
	replicas := []*xdsReplica{startReplica(t, edgeState, instance, false), startReplica(t, edgeState, instance, true)}

	const node = "edge-failover"
	boot, err := xds.Bootstrap(xds.BootstrapConfig{XDSAddr: replicas[0].addr + "," + replicas[1].addr, NodeID: node, Admin: admin, Delta: delta})
	if err != nil {
		t.Fatal(err)
	}
	e2e.StartEnvoyT(t, e2e.EnvoyConfig{Bin: bin, Bootstrap: boot, Admin: admin, Dir: t.TempDir()})
	e := &edge{url: "http://" + listen, admin: "http://" + admin, client: &http.Client{Timeout: 10 * time.Second}, addrs: map[string]string{"d-warm": instance}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e.waitHealthy(ctx, t)
	e.waitRoutable(t, "d-warm")

	var from, to *xdsReplica
	e.waitFor(ctx, t, "envoy on one replica", func() bool {
		from, to = replicas[0], replicas[1]
		if to.connected(node) {
			from, to = to, from
		}
		return from.connected(node) && e.stat(t, "control_plane.connected_state") == 1
	})
	before, dump := e.statsOf(t, xdsStats), e.configDump(t)
	for _, name := range xdsStats {
		if v := before[name]; v < 0 || strings.HasSuffix(name, "_rejected") && v != 0 {
			t.Fatalf("before the failover, envoy's %s = %d: %v", name, v, before)
		}
	}
	if len(dump) != 3 {
		t.Fatalf("envoy's config dump holds %d of listeners, routes and active clusters: %v", len(dump), dump)
	}
	success := e.statsOf(t, []string{"listener_manager.lds.update_success", "cluster_manager.cds.update_success"})

	failed, sent := e.requestUntil(t, func() {
		start := time.Now()
		from.stop()
		e.waitFor(ctx, t, "envoy on the other replica", func() bool {
			return to.connected(node) && e.stat(t, "control_plane.connected_state") == 1
		})
		took := time.Since(start)
		t.Logf("envoy resumed from the other xDS replica %v after the first stopped", took.Round(time.Millisecond))
		if took > failoverBound {
			t.Errorf("envoy took %v to resume, want at most %v", took, failoverBound)
		}
		// The new stream re-sends listeners and clusters: wait until Envoy
		// has taken them, so the checks below see their effect.
		e.waitFor(ctx, t, "envoy applied the other replica's configuration", func() bool {
			now := e.statsOf(t, []string{"listener_manager.lds.update_success", "cluster_manager.cds.update_success"})
			return now["listener_manager.lds.update_success"] > success["listener_manager.lds.update_success"] &&
				now["cluster_manager.cds.update_success"] > success["cluster_manager.cds.update_success"]
		})
	})
	if failed != 0 || sent == 0 {
		t.Errorf("%d of %d requests through envoy during the failover did not answer 200", failed, sent)
	}
	if diff := cmp.Diff(before, e.statsOf(t, xdsStats)); diff != "" {
		t.Errorf("envoy's configuration stats moved in the failover (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(dump, e.configDump(t)); diff != "" {
		t.Errorf("envoy's configuration changed in the failover (-before +after):\n%s", diff)
	}
	if e.hostFlags(t, "deploy-d-warm", instance) != "healthy" {
		t.Errorf("the deployment's instance left load balancing: %q", e.hostFlags(t, "deploy-d-warm", instance))
	}
	for i, r := range replicas {
		if n := r.xs.NACKs(); n != 0 {
			t.Errorf("replica %d: envoy NACKed %d responses", i, n)
		}
	}
}

// statsOf reads the named stats (-1: absent).
func (e *edge) statsOf(t *testing.T, names []string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, n := range names {
		out[n] = e.stat(t, n)
	}
	return out
}

// requestUntil sends GET /healthz through Envoy (the catch-all route to
// thaw's API) back to back while during runs, and returns how many did not
// answer 200 and how many were sent.
func (e *edge) requestUntil(t *testing.T, during func()) (failed, sent int64) {
	t.Helper()
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			sent++
			resp, err := e.client.Get(e.url + "/healthz")
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			if err != nil || resp.StatusCode != http.StatusOK {
				failed++
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	during()
	close(stop)
	<-done
	return failed, sent
}

// configDump is Envoy's dynamic configuration: each listener, route
// configuration and cluster with its version and when it was last updated,
// which a re-applied, changed or drained resource would move.
func (e *edge) configDump(t *testing.T) map[string]string {
	t.Helper()
	resp, err := e.client.Get(e.admin + "/config_dump")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var d struct {
		Configs []map[string]json.RawMessage
	}
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, c := range d.Configs {
		var typ string
		json.Unmarshal(c["@type"], &typ)
		for _, k := range []string{"dynamic_listeners", "dynamic_route_configs", "dynamic_active_clusters", "dynamic_warming_clusters"} {
			if raw, ok := c[k]; ok {
				out[typ[strings.LastIndex(typ, ".")+1:]+"/"+k] = string(raw)
			}
		}
	}
	return out
}
