package xds

import (
	"fmt"
	"net"
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
	// XDSAddr is the ADS server, "host:port".
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
	xdsAddr, err := socket(c.XDSAddr, false)
	if err != nil {
		return nil, fmt.Errorf("xds address: %w", err)
	}
	xdsHost := xdsAddr.GetSocketAddress().GetAddress()
	typ := cluster.Cluster_STATIC
	if net.ParseIP(xdsHost) == nil {
		typ = cluster.Cluster_STRICT_DNS
	}
	tls, err := upstreamTLS(c.TLS, xdsHost)
	if err != nil {
		return nil, err
	}
	h2, err := anypb.New(&httpopts.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpopts.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpopts.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpopts.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &core.Http2ProtocolOptions{}},
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
			ConnectTimeout:                durationpb.New(time.Second),
			TypedExtensionProtocolOptions: map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": h2},
			TransportSocket:               tls,
			LoadAssignment: &endpoint.ClusterLoadAssignment{ClusterName: XDSClusterName, Endpoints: []*endpoint.LocalityLbEndpoints{{
				LbEndpoints: []*endpoint.LbEndpoint{lbEndpoint(xdsAddr, core.HealthStatus_UNKNOWN)},
			}}},
		}}},
	}
	if err := b.ValidateAll(); err != nil {
		return nil, fmt.Errorf("xds: invalid bootstrap: %w", err)
	}
	return protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(b)
}
