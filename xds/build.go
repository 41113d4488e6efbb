package xds

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"slices"
	"sort"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	extauthz "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	router "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	previoushosts "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/thawhq/thaw/routing"
)

// Envoy's defaults that would cut LLM traffic, raised: the default circuit
// breaker allows 1024 requests per cluster (the activator holds up to 10000
// per deployment) and 3 concurrent retries.
const (
	maxRequests   = 100000
	maxRetries    = 1000
	connectTimout = 2 * time.Second
	authzTimeout  = 5 * time.Second
)

// Build turns s into a validated, consistent snapshot. Each resource type's
// version is a hash of its resources, so the same state always yields the
// same versions and Envoy is sent only the types that changed (a new
// instance re-sends endpoints, not listeners).
func Build(s State) (*cache.Snapshot, error) {
	res, err := Resources(s)
	if err != nil {
		return nil, err
	}
	snap, err := cache.NewSnapshot("", res)
	if err != nil {
		return nil, fmt.Errorf("xds: snapshot: %w", err)
	}
	for typ, rs := range res {
		h := sha256.New()
		for _, r := range rs {
			b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
			if err != nil {
				return nil, fmt.Errorf("xds: marshal %s: %w", typ, err)
			}
			h.Write(b)
		}
		snap.Resources[cache.GetResponseType(typ)].Version = hex.EncodeToString(h.Sum(nil))[:16]
	}
	if err := snap.Consistent(); err != nil {
		return nil, fmt.Errorf("xds: inconsistent snapshot: %w", err)
	}
	return snap, nil
}

// validator is what every Envoy resource implements (protoc-gen-validate).
type validator interface{ ValidateAll() error }

// Resources builds the resources of s, each validated with ValidateAll.
func Resources(s State) (map[resource.Type][]types.Resource, error) {
	if s.HoldTimeout <= 0 {
		s.HoldTimeout = DefaultHoldTimeout
	}
	// Sorted and deduped: replicas given the same addresses in another
	// order build the same snapshot.
	apis, activators := sortedSet(s.APIs), sortedSet(s.Activators)
	if len(apis) == 0 || s.Listen == "" {
		return nil, fmt.Errorf("%w: Listen and APIs are required", ErrInvalidState)
	}
	if len(activators) == 0 {
		activators = apis
	}
	idle := s.HoldTimeout + HoldMargin
	deployments := append([]Deployment(nil), s.Deployments...)
	sort.Slice(deployments, func(i, j int) bool { return deployments[i].ID < deployments[j].ID })

	lis, err := buildListener(s.Listen, s.ListenTLS, idle)
	if err != nil {
		return nil, err
	}
	api, err := apiCluster(apis)
	if err != nil {
		return nil, err
	}
	act, err := activatorLoad(activators, 0)
	if err != nil {
		return nil, err
	}
	out := map[resource.Type][]types.Resource{
		resource.ListenerType: {lis},
		resource.RouteType:    {buildRoutes(deployments, idle)},
		resource.ClusterType:  {api, activatorCluster()},
		resource.EndpointType: {&endpoint.ClusterLoadAssignment{ClusterName: ActivatorCluster, Endpoints: act}},
	}
	seen := map[string]bool{}
	for _, d := range deployments {
		if d.ID == "" || seen[d.ID] {
			return nil, fmt.Errorf("%w: empty or duplicate deployment id %q", ErrInvalidState, d.ID)
		}
		seen[d.ID] = true
		name := DeployClusterPrefix + d.ID
		cla, err := deploymentLoad(name, d, activators)
		if err != nil {
			return nil, err
		}
		out[resource.ClusterType] = append(out[resource.ClusterType], edsCluster(name))
		out[resource.EndpointType] = append(out[resource.EndpointType], cla)
	}
	for typ, rs := range out {
		for _, r := range rs {
			if err := r.(validator).ValidateAll(); err != nil {
				return nil, fmt.Errorf("xds: invalid %s %q: %w", typ, cache.GetResourceName(r), err)
			}
		}
	}
	return out, nil
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		// Only an unregistered message type fails, which is a build-time bug.
		panic(err)
	}
	return a
}

// socket is addr as an Envoy address. EDS and STATIC hosts must be IPs
// (Envoy does not resolve names there and would reject the update).
func socket(addr string, needIP bool) (*core.Address, error) {
	host, port, err := hostPort(addr)
	if err != nil {
		return nil, err
	}
	if needIP && net.ParseIP(host) == nil {
		return nil, fmt.Errorf("%w: address %q: want an IP address", ErrInvalidState, addr)
	}
	return &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
		Address: host, PortSpecifier: &core.SocketAddress_PortValue{PortValue: port},
	}}}, nil
}

func adsSource() *core.ConfigSource {
	return &core.ConfigSource{
		ResourceApiVersion:    core.ApiVersion_V3,
		ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}},
	}
}

func exact(s string) *matcher.StringMatcher {
	return &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: s}}
}

func exactList(names ...string) *matcher.ListStringMatcher {
	l := &matcher.ListStringMatcher{}
	for _, n := range names {
		l.Patterns = append(l.Patterns, exact(n))
	}
	return l
}

func regex(re string) *matcher.RegexMatcher { return &matcher.RegexMatcher{Regex: re} }

func buildListener(listen string, lt ListenerTLS, idle time.Duration) (*listener.Listener, error) {
	addr, err := socket(listen, true)
	if err != nil {
		return nil, err
	}
	tls, err := downstreamTLS(lt)
	if err != nil {
		return nil, err
	}
	authz := &extauthz.ExtAuthz{
		TransportApiVersion: core.ApiVersion_V3,
		Services: &extauthz.ExtAuthz_HttpService{HttpService: &extauthz.HttpService{
			ServerUri: &core.HttpUri{
				Uri:              "http://" + APICluster + routing.AuthzPrefix,
				HttpUpstreamType: &core.HttpUri_Cluster{Cluster: APICluster},
				Timeout:          durationpb.New(authzTimeout),
			},
			PathPrefix:  routing.AuthzPrefix,
			RetryPolicy: authzRetry(),
			AuthorizationResponse: &extauthz.AuthorizationResponse{
				AllowedUpstreamHeaders: exactList(deployIDHeader, routeHeader, grantHeader),
				AllowedClientHeaders:   exactList("content-type", "retry-after"),
			},
		}},
		AllowedHeaders: exactList("content-type"),
		WithRequestBody: &extauthz.BufferSettings{
			MaxRequestBytes: AuthzMaxBody, AllowPartialMessage: true,
		},
		ClearRouteCache: true,
		// thaw unreachable: 503, never let the request through.
		StatusOnError: &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable},
	}
	manager := &hcm.HttpConnectionManager{
		CodecType:  hcm.HttpConnectionManager_AUTO,
		StatPrefix: "thaw",
		RouteSpecifier: &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{
			ConfigSource: adsSource(), RouteConfigName: RouteConfigName,
		}},
		HttpFilters: []*hcm.HttpFilter{
			{Name: "envoy.filters.http.ext_authz", ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(authz)}},
			{Name: "envoy.filters.http.router", ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(&router.Router{})}},
		},
		// A held request is silent until an instance is ready: the default
		// 5 min would cut it with 408.
		StreamIdleTimeout: durationpb.New(idle),
		// No whole-request deadline: streams last as long as they stream.
		RequestTimeout: durationpb.New(0),
		NormalizePath:  wrapperspb.Bool(true),
		MergeSlashes:   true,
		// This is the edge: the client's address is the peer's, and x-envoy-*
		// headers from outside (retry and timeout overrides) are not honored.
		UseRemoteAddress: wrapperspb.Bool(true),
	}
	return &listener.Listener{
		Name:    ListenerName,
		Address: addr,
		FilterChains: []*listener.FilterChain{{
			Filters: []*listener.Filter{{
				Name:       "envoy.filters.network.http_connection_manager",
				ConfigType: &listener.Filter_TypedConfig{TypedConfig: mustAny(manager)},
			}},
			TransportSocket: tls,
		}},
	}, nil
}

// authzRetry retries a check that failed because its thaw replica died
// (before or while answering it) or is ejected for it on another replica,
// soon: the client is waiting. A check changes nothing, so it may run
// twice.
func authzRetry() *core.RetryPolicy {
	return &core.RetryPolicy{
		RetryOn:    "connect-failure,refused-stream,reset-before-request,reset",
		NumRetries: wrapperspb.UInt32(3),
		RetryBackOff: &core.BackoffStrategy{
			BaseInterval: durationpb.New(10 * time.Millisecond),
			MaxInterval:  durationpb.New(100 * time.Millisecond),
		},
		RetryHostPredicate: []*core.RetryPolicy_RetryHostPredicate{{
			Name:       "envoy.retry_host_predicates.previous_hosts",
			ConfigType: &core.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: mustAny(&previoushosts.PreviousHostsPredicate{})},
		}},
		HostSelectionRetryMaxAttempts: 5,
	}
}

func thresholds() *cluster.CircuitBreakers {
	return &cluster.CircuitBreakers{Thresholds: []*cluster.CircuitBreakers_Thresholds{{
		Priority:           core.RoutingPriority_DEFAULT,
		MaxConnections:     wrapperspb.UInt32(maxRequests),
		MaxPendingRequests: wrapperspb.UInt32(maxRequests),
		MaxRequests:        wrapperspb.UInt32(maxRequests),
		MaxRetries:         wrapperspb.UInt32(maxRetries),
	}}}
}

func edsCluster(name string) *cluster.Cluster {
	return &cluster.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_EDS},
		EdsClusterConfig:     &cluster.Cluster_EdsClusterConfig{EdsConfig: adsSource()},
		ConnectTimeout:       durationpb.New(connectTimout),
		LbPolicy:             cluster.Cluster_LEAST_REQUEST,
		CircuitBreakers:      thresholds(),
	}
}

// activatorCluster ejects an activator replica as soon as connections to it
// fail (it died): least-request balancing would otherwise keep choosing the
// dead replica, which has no request in flight, for retries of the requests
// it was holding.
func activatorCluster() *cluster.Cluster {
	c := edsCluster(ActivatorCluster)
	c.OutlierDetection = ejectOnConnectFailure()
	return c
}

// ejectOnConnectFailure ejects a host after one failed connection, for 5 s
// (longer each time it fails again).
func ejectOnConnectFailure() *cluster.OutlierDetection {
	return &cluster.OutlierDetection{
		SplitExternalLocalOriginErrors:         true,
		ConsecutiveLocalOriginFailure:          wrapperspb.UInt32(1),
		EnforcingConsecutiveLocalOriginFailure: wrapperspb.UInt32(100),
		Interval:                               durationpb.New(time.Second),
		BaseEjectionTime:                       durationpb.New(5 * time.Second),
		MaxEjectionPercent:                     wrapperspb.UInt32(100),
	}
}

// apiCluster balances over thaw's API replicas. A replica whose
// connections fail (it died) is ejected at once, as in activatorCluster, so
// the catch-all route and /authz stop trying it; their retries move a
// request that failed to connect to another replica.
func apiCluster(addrs []string) (*cluster.Cluster, error) {
	typ := cluster.Cluster_STATIC
	l := &endpoint.LocalityLbEndpoints{}
	for _, addr := range addrs {
		a, err := socket(addr, false)
		if err != nil {
			return nil, err
		}
		if net.ParseIP(a.GetSocketAddress().GetAddress()) == nil {
			typ = cluster.Cluster_STRICT_DNS // a name: Envoy resolves it
		}
		l.LbEndpoints = append(l.LbEndpoints, lbEndpoint(a, core.HealthStatus_UNKNOWN))
	}
	return &cluster.Cluster{
		Name:                 APICluster,
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: typ},
		ConnectTimeout:       durationpb.New(connectTimout),
		CircuitBreakers:      thresholds(),
		OutlierDetection:     ejectOnConnectFailure(),
		LoadAssignment: &endpoint.ClusterLoadAssignment{
			ClusterName: APICluster, Endpoints: []*endpoint.LocalityLbEndpoints{l},
		},
	}, nil
}

// sortedSet is addrs sorted, without repeats; nil for none.
func sortedSet(addrs []string) []string {
	return slices.Compact(slices.Sorted(slices.Values(addrs)))
}

func lbEndpoint(a *core.Address, h core.HealthStatus) *endpoint.LbEndpoint {
	return &endpoint.LbEndpoint{
		HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{Address: a}},
		HealthStatus:   h,
	}
}

func activatorLoad(addrs []string, priority uint32) ([]*endpoint.LocalityLbEndpoints, error) {
	l := &endpoint.LocalityLbEndpoints{Priority: priority}
	for _, addr := range addrs {
		a, err := socket(addr, true)
		if err != nil {
			return nil, err
		}
		l.LbEndpoints = append(l.LbEndpoints, lbEndpoint(a, core.HealthStatus_UNKNOWN))
	}
	return []*endpoint.LocalityLbEndpoints{l}, nil
}

// deploymentLoad: priority 0 = the deployment's instances, priority 1 = the
// activators. Envoy sends everything to priority 1 while priority 0 has no
// healthy (non-draining) host.
func deploymentLoad(name string, d Deployment, activators []string) (*endpoint.ClusterLoadAssignment, error) {
	p0 := &endpoint.LocalityLbEndpoints{Priority: 0}
	eps := append([]Endpoint(nil), d.Endpoints...)
	sort.Slice(eps, func(i, j int) bool { return eps[i].ID < eps[j].ID })
	for _, e := range eps {
		if d.Failed {
			break
		}
		a, err := socket(e.Addr, true)
		if err != nil {
			return nil, fmt.Errorf("deployment %s instance %s: %w", d.ID, e.ID, err)
		}
		h := core.HealthStatus_HEALTHY
		if e.Draining {
			h = core.HealthStatus_DRAINING
		}
		ep := lbEndpoint(a, h)
		ep.Metadata = &core.Metadata{FilterMetadata: map[string]*structpb.Struct{
			"thaw": {Fields: map[string]*structpb.Value{"instance_id": structpb.NewStringValue(e.ID)}},
		}}
		p0.LbEndpoints = append(p0.LbEndpoints, ep)
	}
	p1, err := activatorLoad(activators, 1)
	if err != nil {
		return nil, err
	}
	return &endpoint.ClusterLoadAssignment{
		ClusterName: name,
		Endpoints:   append([]*endpoint.LocalityLbEndpoints{p0}, p1...),
	}, nil
}
