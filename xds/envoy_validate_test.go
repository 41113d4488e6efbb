package xds

import (
	"testing"

	bootstrap "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/thawhq/thaw/internal/envoytest"
)

// staticBootstrap is the configuration Resources(st) gives Envoy, as one
// static bootstrap Envoy can validate offline: the route configuration
// inlined in the listener (so Envoy checks every cluster a route names
// exists) and each EDS cluster made static with its load assignment (so
// Envoy checks the endpoints, priorities and health too).
func staticBootstrap(t *testing.T, st State) []byte {
	t.Helper()
	res := resources(t, st)
	lis := proto.Clone(res[resource.ListenerType][0]).(*listener.Listener)
	f := lis.GetFilterChains()[0].GetFilters()[0]
	var m hcm.HttpConnectionManager
	if err := f.GetTypedConfig().UnmarshalTo(&m); err != nil {
		t.Fatal(err)
	}
	m.RouteSpecifier = &hcm.HttpConnectionManager_RouteConfig{RouteConfig: res[resource.RouteType][0].(*route.RouteConfiguration)}
	f.ConfigType = &listener.Filter_TypedConfig{TypedConfig: mustAny(&m)}

	loads := map[string]*endpoint.ClusterLoadAssignment{}
	for _, r := range res[resource.EndpointType] {
		cla := r.(*endpoint.ClusterLoadAssignment)
		loads[cla.GetClusterName()] = cla
	}
	b := &bootstrap.Bootstrap{
		Node:            &core.Node{Id: "validate", Cluster: "thaw"},
		StaticResources: &bootstrap.Bootstrap_StaticResources{Listeners: []*listener.Listener{lis}},
	}
	for _, r := range res[resource.ClusterType] {
		c := proto.Clone(r).(*cluster.Cluster)
		if cla, ok := loads[c.GetName()]; ok {
			c.ClusterDiscoveryType = &cluster.Cluster_Type{Type: cluster.Cluster_STATIC}
			c.EdsClusterConfig, c.LoadAssignment = nil, cla
		}
		b.StaticResources.Clusters = append(b.StaticResources.Clusters, c)
	}
	js, err := protojson.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// TestResourcesValidInEnvoy: the real Envoy accepts what Build makes, for
// one thaw replica and for several (one named by DNS), with the activators
// given or defaulted to the replicas.
func TestResourcesValidInEnvoy(t *testing.T) {
	replicas := testState()
	replicas.APIs = []string{"127.0.0.1:8080", "127.0.0.1:8090", "thaw-3.internal:8080"}
	defaulted := testState()
	defaulted.APIs = []string{"127.0.0.1:8080", "127.0.0.1:8090"}
	defaulted.Activators = nil
	for name, st := range map[string]State{"one replica": testState(), "three replicas": replicas, "replicas hold": defaulted} {
		t.Run(name, func(t *testing.T) { envoytest.Validate(t, staticBootstrap(t, st)) })
	}
}
