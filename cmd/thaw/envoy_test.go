package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/internal/envoytest"
	"github.com/thawhq/thaw/xds"
)

func TestEnvoyBootstrap(t *testing.T) {
	for _, delta := range []bool{false, true} {
		args := []string{"--xds-addr", "127.0.0.1:18000", "--node-id", "edge-7", "--admin", "127.0.0.1:9902"}
		want := "GRPC"
		if delta {
			args, want = append(args, "--delta"), "DELTA_GRPC"
		}
		var out bytes.Buffer
		if err := runEnvoyBootstrap(context.Background(), args, &out, io.Discard); err != nil {
			t.Fatal(err)
		}
		var b struct {
			Node  struct{ ID string }
			Admin struct {
				Address struct {
					SocketAddress struct {
						Address   string
						PortValue int
					}
				}
			}
			DynamicResources struct {
				AdsConfig struct {
					APIType      string
					GrpcServices []struct{ EnvoyGrpc struct{ ClusterName string } }
				}
				LdsConfig, CdsConfig struct{ Ads struct{} }
			}
			StaticResources struct {
				Clusters []struct {
					Name           string
					LoadAssignment struct {
						Endpoints []struct {
							LbEndpoints []struct {
								Endpoint struct {
									Address struct {
										SocketAddress struct {
											Address   string
											PortValue int
										}
									}
								}
							}
						}
					}
				}
			}
		}
		if err := json.Unmarshal(out.Bytes(), &b); err != nil {
			t.Fatalf("bootstrap is not JSON: %v\n%s", err, out.String())
		}
		c := b.StaticResources.Clusters[0]
		xdsAddr := c.LoadAssignment.Endpoints[0].LbEndpoints[0].Endpoint.Address.SocketAddress
		got := []any{b.Node.ID, b.Admin.Address.SocketAddress.PortValue, b.DynamicResources.AdsConfig.APIType,
			b.DynamicResources.AdsConfig.GrpcServices[0].EnvoyGrpc.ClusterName, c.Name, xdsAddr.Address, xdsAddr.PortValue}
		wantAll := []any{"edge-7", 9902, want, "xds_cluster", "xds_cluster", "127.0.0.1", 18000}
		if diff := cmp.Diff(wantAll, got); diff != "" {
			t.Errorf("delta=%v bootstrap (-want +got):\n%s", delta, diff)
		}
		envoytest.Validate(t, out.Bytes())
	}

	for _, args := range [][]string{{"--xds-addr", "nope"}, {"--admin", "localhost:9901"}, {"extra"}} {
		if err := runEnvoyBootstrap(context.Background(), args, io.Discard, io.Discard); err == nil {
			t.Errorf("runEnvoyBootstrap(%q) = nil, want an error", args)
		}
	}
}

func TestEdgeFlags(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var none edgeFlags
	if xs, err := none.newXDS(":8080", time.Minute, log); xs != nil || err != nil {
		t.Errorf("without --xds-addr: %v, %v; want no server", xs, err)
	}
	e := edgeFlags{xdsAddr: "127.0.0.1:0", listen: "127.0.0.1:10000", activators: "127.0.0.1:8081, 127.0.0.1:8082"}
	if xs, err := e.newXDS("0.0.0.0:8080", time.Minute, log); xs == nil || err != nil {
		t.Errorf("newXDS = %v, %v", xs, err)
	}
	for _, bad := range []edgeFlags{
		{xdsAddr: "127.0.0.1:0", listen: "localhost:10000"},
		{xdsAddr: "127.0.0.1:0", listen: "127.0.0.1:10000", activators: "act:8081"},
		{xdsAddr: "127.0.0.1:0", listen: "127.0.0.1:10000", activators: "127.0.0.1"},
	} {
		if _, err := bad.newXDS(":8080", time.Minute, log); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
	if _, err := (&edgeFlags{xdsAddr: "127.0.0.1:0", listen: "127.0.0.1:10000", replicas: "127.0.0.1:8081"}).newXDS("127.0.0.1:8080", time.Minute, log); err == nil ||
		!strings.Contains(err.Error(), "does not include this replica's --addr 127.0.0.1:8080") {
		t.Errorf("--replicas without this replica: %v, want an error naming its --addr", err)
	}
	for in, want := range map[string]string{":8080": "127.0.0.1:8080", "0.0.0.0:1": "127.0.0.1:1", "[::]:2": "127.0.0.1:2", "10.0.0.5:3": "10.0.0.5:3"} {
		if got, err := dialable(in); got != want || err != nil {
			t.Errorf("dialable(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// TestEdgeState: two replicas given the same --replicas (in another order)
// describe the same edge, whose catch-all and activators are both replicas.
func TestEdgeState(t *testing.T) {
	flags := map[string]edgeFlags{
		"127.0.0.1:8080": {xdsAddr: "127.0.0.1:18000", listen: "127.0.0.1:10000", replicas: "127.0.0.1:8080,127.0.0.1:8081"},
		"127.0.0.1:8081": {xdsAddr: "127.0.0.1:18001", listen: "127.0.0.1:10000", replicas: "127.0.0.1:8081,127.0.0.1:8080"},
	}
	var built []*cache.Snapshot
	for addr, e := range flags {
		st, err := e.edgeState(addr, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		snap, err := xds.Build(st)
		if err != nil {
			t.Fatal(err)
		}
		built = append(built, snap)
		var hosts []string
		for _, typ := range []string{resource.ClusterType, resource.EndpointType} {
			for name, r := range snap.GetResources(typ) {
				var cla *endpoint.ClusterLoadAssignment
				switch r := r.(type) {
				case *cluster.Cluster:
					cla = r.GetLoadAssignment()
				case *endpoint.ClusterLoadAssignment:
					cla = r
				}
				for _, l := range cla.GetEndpoints() {
					for _, h := range l.GetLbEndpoints() {
						sa := h.GetEndpoint().GetAddress().GetSocketAddress()
						hosts = append(hosts, fmt.Sprintf("%s %s:%d", name, sa.GetAddress(), sa.GetPortValue()))
					}
				}
			}
		}
		slices.Sort(hosts)
		want := []string{
			"thaw-activator 127.0.0.1:8080", "thaw-activator 127.0.0.1:8081",
			"thaw-api 127.0.0.1:8080", "thaw-api 127.0.0.1:8081",
		}
		if diff := cmp.Diff(want, hosts); diff != "" {
			t.Errorf("replica %s: hosts (-want +got):\n%s", addr, diff)
		}
	}
	for _, typ := range []string{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType} {
		if built[0].GetVersion(typ) != built[1].GetVersion(typ) {
			t.Errorf("%s: the replicas' versions differ: %s, %s", typ, built[0].GetVersion(typ), built[1].GetVersion(typ))
		}
	}
}

// TestReplicaAPIs: --replicas is what Envoy's catch-all and /authz balance
// over, in dialable form, and must include this replica.
func TestReplicaAPIs(t *testing.T) {
	tests := []struct {
		name, list, addr string
		want             []string
		err              string
	}{
		{name: "default: this replica", addr: "0.0.0.0:8080", want: []string{"127.0.0.1:8080"}},
		{name: "two, this one first", list: "127.0.0.1:8080,127.0.0.1:8081", addr: "127.0.0.1:8080", want: []string{"127.0.0.1:8080", "127.0.0.1:8081"}},
		{name: "two, this one second", list: " 127.0.0.1:8080 , 127.0.0.1:8081", addr: "127.0.0.1:8081", want: []string{"127.0.0.1:8080", "127.0.0.1:8081"}},
		{name: "listen forms made dialable", list: ":8080,10.0.0.9:8080", addr: "127.0.0.1:8080", want: []string{"127.0.0.1:8080", "10.0.0.9:8080"}},
		{name: "all interfaces: a loopback address on its port", list: "127.0.0.2:8080,10.255.0.9:8080", addr: "[::]:8080", want: []string{"127.0.0.2:8080", "10.255.0.9:8080"}},
		{name: "all interfaces: localhost", list: "localhost:8080", addr: ":8080", want: []string{"localhost:8080"}},
		{name: "not this replica", list: "127.0.0.1:8081,127.0.0.1:8082", addr: "127.0.0.1:8080", err: `--replicas "127.0.0.1:8081,127.0.0.1:8082" does not include this replica's --addr 127.0.0.1:8080`},
		{name: "another port on all interfaces", list: "127.0.0.1:8081", addr: ":8080", err: "does not include"},
		{name: "another host on all interfaces", list: "192.0.2.1:8080", addr: ":8080", err: "does not include"},
		{name: "no port", list: "127.0.0.1:8080,10.0.0.9", addr: "127.0.0.1:8080", err: "--replicas: address 10.0.0.9: missing port"},
		{name: "only commas", list: ",", addr: "127.0.0.1:8080", err: "--replicas: no address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := replicaAPIs(tt.list, tt.addr)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("replicaAPIs(%q, %q) = %v, %v; want error %q", tt.list, tt.addr, got, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("replicaAPIs(%q, %q) (-want +got):\n%s", tt.list, tt.addr, diff)
			}
		})
	}
}

// recEndpoints records calls; Drained returns the channel in drained.
type recEndpoints struct {
	mu      sync.Mutex // mu guards calls.
	calls   []string
	drained chan struct{}
}

func (r *recEndpoints) rec(s string) {
	r.mu.Lock()
	r.calls = append(r.calls, s)
	r.mu.Unlock()
}

func (r *recEndpoints) SetEndpoints(id string, c int, addrs map[string]string) {
	r.rec("set " + id + " " + strings.Repeat("+", c) + " " + addrs["i"])
}
func (r *recEndpoints) Drained(id, inst string) <-chan struct{} {
	r.rec("drained " + id + " " + inst)
	return r.drained
}
func (r *recEndpoints) Fail(id, reason string)    { r.rec("fail " + id + " " + reason) }
func (r *recEndpoints) Recover(id string)         { r.rec("recover " + id) }
func (r *recEndpoints) Remove(id string)          { r.rec("remove " + id) }
func (r *recEndpoints) SetModel(id, model string) { r.rec("model " + id + " " + model) }

// TestXDSEndpointsNameRoutes: the edge's route for a deployment carries its
// model name from the store; an unknown deployment gets no name.
func TestXDSEndpointsNameRoutes(t *testing.T) {
	r := &recEndpoints{}
	x := xdsEndpoints{r, func(id string) (deploy.Deployment, error) {
		if id != "d" {
			return deploy.Deployment{}, deploy.ErrNotFound
		}
		return deploy.Deployment{ID: "d", Owner: "alice", ModelName: "llama"}, nil
	}}
	x.SetEndpoints("d", 1, map[string]string{"i": "127.0.0.1:1"})
	x.Fail("d", "crash loop")
	x.Recover("d")
	x.SetEndpoints("gone", 1, nil)
	x.Remove("d")
	want := []string{
		"model d alice/llama", "set d + 127.0.0.1:1",
		"model d alice/llama", "fail d crash loop",
		"model d alice/llama", "recover d",
		"set gone + ",
		"remove d",
	}
	if diff := cmp.Diff(want, r.calls); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
}

// TestEndpointsTee runs in a synctest bubble (the tee joins channels):
// synctest.Wait lets its joining goroutine settle, so "not drained yet" is
// checked without a timer.
func TestEndpointsTee(t *testing.T) { synctest.Test(t, testEndpointsTee) }

func testEndpointsTee(t *testing.T) {
	a := &recEndpoints{drained: make(chan struct{})}
	b := &recEndpoints{drained: make(chan struct{})}
	tee := endpointsTee{a, b}
	tee.SetEndpoints("d", 2, map[string]string{"i": "127.0.0.1:1"})
	tee.Fail("d", "crash loop")
	tee.Recover("d")
	tee.Remove("d")
	ch := tee.Drained("d", "i")
	want := []string{"set d ++ 127.0.0.1:1", "fail d crash loop", "recover d", "remove d", "drained d i"}
	for name, r := range map[string]*recEndpoints{"activator": a, "edge": b} {
		if diff := cmp.Diff(want, r.calls); diff != "" {
			t.Errorf("%s calls (-want +got):\n%s", name, diff)
		}
	}
	close(a.drained)
	synctest.Wait()
	select {
	case <-ch:
		t.Fatal("drained while the edge still has requests in flight")
	default:
	}
	close(b.drained)
	synctest.Wait()
	select {
	case <-ch:
	default:
		t.Fatal("not drained once both are")
	}
}
