package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	bootstrap "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	router "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/thawhq/thaw/test/e2e"
)

// envoyProc is one Envoy started by the bench, with --concurrency 1.
type envoyProc struct {
	*e2e.Envoy
	dir string
}

// envoyBinFor is bin/envoy next to the thaw binary.
func envoyBinFor(thawBin string) string {
	return filepath.Join(filepath.Dir(thawBin), "envoy")
}

// startEnvoy runs bin with the bootstrap config and waits until its admin
// answers /ready with LIVE.
func startEnvoy(bin string, config []byte, admin string) (*envoyProc, error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("envoy: %w (run make deps)", err)
	}
	dir, err := os.MkdirTemp("", "thawbench-envoy-")
	if err != nil {
		return nil, err
	}
	e, err := e2e.StartEnvoy(e2e.EnvoyConfig{Bin: bin, Bootstrap: config, Admin: admin, Dir: dir})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &envoyProc{Envoy: e, dir: dir}, nil
}

func (e *envoyProc) logTail() string { return e.Out.TailLines(12) }

// Stop ends Envoy (SIGTERM, then SIGKILL after 5 s) and removes its files.
func (e *envoyProc) Stop() {
	e.Envoy.Stop()
	os.RemoveAll(e.dir)
}

// staticEnvoyConfig is an Envoy bootstrap with one listener on listen
// routing everything to one STATIC cluster at upstream: no thaw, no
// ext_authz, no xDS (Envoy's own floor). It is built from go-control-plane's
// types and validated as thaw's own bootstrap is (xds.Bootstrap).
func staticEnvoyConfig(listen, admin, upstream string) ([]byte, error) {
	var addrs []*core.Address
	for _, a := range []string{listen, admin, upstream} {
		addr, err := socketAddress(a)
		if err != nil {
			return nil, err
		}
		addrs = append(addrs, addr)
	}
	manager, err := staticManager("sim")
	if err != nil {
		return nil, err
	}
	b := &bootstrap.Bootstrap{
		Admin: &bootstrap.Admin{Address: addrs[1]},
		StaticResources: &bootstrap.Bootstrap_StaticResources{
			Listeners: []*listener.Listener{{Name: "static", Address: addrs[0], FilterChains: []*listener.FilterChain{{
				Filters: []*listener.Filter{{Name: "envoy.filters.network.http_connection_manager",
					ConfigType: &listener.Filter_TypedConfig{TypedConfig: manager}}},
			}}}},
			Clusters: []*cluster.Cluster{{
				Name:                 "sim",
				ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_STATIC},
				ConnectTimeout:       durationpb.New(2 * time.Second),
				LoadAssignment: &endpoint.ClusterLoadAssignment{ClusterName: "sim", Endpoints: []*endpoint.LocalityLbEndpoints{{
					LbEndpoints: []*endpoint.LbEndpoint{{HostIdentifier: &endpoint.LbEndpoint_Endpoint{
						Endpoint: &endpoint.Endpoint{Address: addrs[2]}}}},
				}}},
			}},
		},
	}
	if err := b.ValidateAll(); err != nil {
		return nil, fmt.Errorf("static envoy config: %w", err)
	}
	return protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(b)
}

// staticManager is an HTTP connection manager routing every request to
// cluster, with no route timeout (streams last as long as they last).
func staticManager(cluster string) (*anypb.Any, error) {
	r, err := anypb.New(&router.Router{})
	if err != nil {
		return nil, err
	}
	return anypb.New(&hcm.HttpConnectionManager{
		StatPrefix: "static",
		RouteSpecifier: &hcm.HttpConnectionManager_RouteConfig{RouteConfig: &route.RouteConfiguration{
			VirtualHosts: []*route.VirtualHost{{Name: "all", Domains: []string{"*"}, Routes: []*route.Route{{
				Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
				Action: &route.Route_Route{Route: &route.RouteAction{
					ClusterSpecifier: &route.RouteAction_Cluster{Cluster: cluster}, Timeout: durationpb.New(0)}},
			}}}},
		}},
		HttpFilters: []*hcm.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: r}}},
	})
}

// socketAddress is a "host:port" as Envoy's TCP socket address.
func socketAddress(addr string) (*core.Address, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("port of %q: %w", addr, err)
	}
	return &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
		Address: host, PortSpecifier: &core.SocketAddress_PortValue{PortValue: uint32(p)}}}}, nil
}
