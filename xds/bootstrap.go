package xds

import (
	"fmt"
	"net"
	"strings"
	"time"

	bootstrap "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	httpopts "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// XDSClusterName is the bootstrap's one static cluster: the ADS server.
const XDSClusterName = "xds_cluster"

// BootstrapConfig configures Bootstrap.
type BootstrapConfig struct {
	// XDSAddr is the ADS server, "host:port", or the replicas of a
	// replicated one, comma-separated: the ADS cluster holds one endpoint
	// per replica, and when the stream to one breaks Envoy re-dials the
	// cluster and resumes from another (they serve identical snapshots).
	// With TLS and replicas on different hosts, TLS.ServerName is required:
	// the one name every replica's certificate holds.
	XDSAddr string
	// NodeID is the Envoy's node id. Default "thaw-edge".
	NodeID string
	// NodeCluster is the node's cluster name. Default "thaw".
	NodeCluster string
	// Admin is the admin interface's "host:port". Default "127.0.0.1:9901".
	Admin string
	// Delta selects incremental xDS (DELTA_GRPC) over state of the world.
	Delta bool
	// TLS connects to the xDS server over TLS (optionally mutual); zero:
	// cleartext.
	TLS BootstrapTLS
}

// Bootstrap returns a minimal Envoy bootstrap as JSON (which Envoy reads as
// YAML too): the node, the admin interface, and ADS on a static HTTP/2
// cluster (over TLS with c.TLS); listeners, routes, clusters and endpoints
// all come over ADS.
func Bootstrap(c BootstrapConfig) ([]byte, error) {
	if c.NodeID == "" {
		c.NodeID = "thaw-edge"
	}
	if c.NodeCluster == "" {
		c.NodeCluster = "thaw"
	}
	if c.Admin == "" {
		c.Admin = "127.0.0.1:9901"
	}
	admin, err := socket(c.Admin, true)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	hosts, err := xdsEndpoints(c.XDSAddr)
	if err != nil {
		return nil, err
	}
	typ, serverName := cluster.Cluster_STATIC, ""
	for i, h := range hosts {
		host := h.GetEndpoint().GetAddress().GetSocketAddress().GetAddress()
		if net.ParseIP(host) == nil {
			typ = cluster.Cluster_STRICT_DNS
		}
		switch {
		case i == 0:
			serverName = host
		case host != serverName && c.TLS.CAFile != "" && c.TLS.ServerName == "":
			return nil, fmt.Errorf("%w: xDS TLS: the replicas %q have different hosts: give the server name their certificates share", ErrInvalidState, c.XDSAddr)
		}
	}
	tls, err := upstreamTLS(c.TLS, serverName)
	if err != nil {
		return nil, err
	}
	h2, err := anypb.New(&httpopts.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpopts.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpopts.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpopts.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &core.Http2ProtocolOptions{
				ConnectionKeepalive: adsKeepalive(),
			}},
		}},
	})
	if err != nil {
		return nil, err
	}
	apiType := core.ApiConfigSource_GRPC
	if c.Delta {
		apiType = core.ApiConfigSource_DELTA_GRPC
	}
	b := &bootstrap.Bootstrap{
		Node:  &core.Node{Id: c.NodeID, Cluster: c.NodeCluster},
		Admin: &bootstrap.Admin{Address: admin},
		DynamicResources: &bootstrap.Bootstrap_DynamicResources{
			AdsConfig: &core.ApiConfigSource{
				ApiType:             apiType,
				TransportApiVersion: core.ApiVersion_V3,
				GrpcServices: []*core.GrpcService{{TargetSpecifier: &core.GrpcService_EnvoyGrpc_{
					EnvoyGrpc: &core.GrpcService_EnvoyGrpc{ClusterName: XDSClusterName},
				}}},
				SetNodeOnFirstMessageOnly: true,
			},
			LdsConfig: adsSource(),
			CdsConfig: adsSource(),
		},
		StaticResources: &bootstrap.Bootstrap_StaticResources{Clusters: []*cluster.Cluster{{
			Name:                          XDSClusterName,
			ClusterDiscoveryType:          &cluster.Cluster_Type{Type: typ},
			ConnectTimeout:                durationpb.New(adsConnectTimeout),
			TypedExtensionProtocolOptions: map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": h2},
			TransportSocket:               tls,
			LoadAssignment: &endpoint.ClusterLoadAssignment{ClusterName: XDSClusterName, Endpoints: []*endpoint.LocalityLbEndpoints{{
				LbEndpoints: hosts,
			}}},
		}}},
	}
	if err := b.ValidateAll(); err != nil {
		return nil, fmt.Errorf("xds: invalid bootstrap: %w", err)
	}
	return protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(b)
}

// How Envoy finds a live ADS replica. A replica that died with its host
// still up refuses the connection at once; one whose host is gone is given
// up after adsConnectTimeout. Either way Envoy's xDS client retries the
// stream with its jittered backoff (0.5 s base) and the round robin over the
// cluster's hosts dials the next replica. A stream whose peer vanished
// without a FIN (a host lost, a partition) is found by HTTP/2 PINGs: no
// answer within adsPingTimeout closes the connection. The ping interval
// stays above the xDS server's keepalive enforcement minimum (15 s in
// server.go), which answers more frequent pings with GOAWAY.
const (
	adsConnectTimeout = time.Second
	adsPingInterval   = 20 * time.Second
	adsPingTimeout    = 5 * time.Second
)

func adsKeepalive() *core.KeepaliveSettings {
	return &core.KeepaliveSettings{
		Interval: durationpb.New(adsPingInterval),
		Timeout:  durationpb.New(adsPingTimeout),
	}
}

// xdsEndpoints are the ADS cluster's hosts: addrs is "host:port" or a
// comma-separated list of them, one per xDS server replica.
func xdsEndpoints(addrs string) ([]*endpoint.LbEndpoint, error) {
	var out []*endpoint.LbEndpoint
	seen := map[string]bool{}
	for _, addr := range strings.Split(addrs, ",") {
		addr = strings.TrimSpace(addr)
		a, err := socket(addr, false)
		if err != nil {
			return nil, fmt.Errorf("xds address: %w", err)
		}
		if seen[addr] {
			return nil, fmt.Errorf("%w: xds address %q given twice", ErrInvalidState, addr)
		}
		seen[addr] = true
		out = append(out, lbEndpoint(a, core.HealthStatus_UNKNOWN))
	}
	return out, nil
}
