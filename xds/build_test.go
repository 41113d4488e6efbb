package xds

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthz "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
)

func testState() State {
	return State{
		Listen:      "127.0.0.1:10000",
		APIs:        []string{"127.0.0.1:8080"},
		Activators:  []string{"127.0.0.1:8081", "127.0.0.1:8082"},
		HoldTimeout: 2 * time.Minute,
		Deployments: []Deployment{
			{ID: "warm", Model: "alice/a", Capacity: 4, Endpoints: []Endpoint{
				{ID: "i2", Addr: "127.0.0.1:9002", Draining: true},
				{ID: "i1", Addr: "127.0.0.1:9001"},
			}},
			{ID: "cold", Model: "bob/b", Capacity: 1},
			{ID: "broken", Model: "bob/c", Failed: true, Endpoints: []Endpoint{{ID: "i3", Addr: "127.0.0.1:9003"}}},
		},
	}
}

// resources is Resources(st), failing the test on an error.
func resources(t *testing.T, st State) map[resource.Type][]types.Resource {
	t.Helper()
	res, err := Resources(st)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func names(rs []types.Resource) []string {
	var out []string
	for _, r := range rs {
		out = append(out, cache.GetResourceName(r))
	}
	sort.Strings(out)
	return out
}

func TestBuildResources(t *testing.T) {
	snap, err := Build(testState())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, typ := range []resource.Type{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType} {
		var rs []types.Resource
		for _, r := range snap.GetResources(typ) {
			rs = append(rs, r)
		}
		got[typ] = names(rs)
	}
	want := map[string][]string{
		resource.ListenerType: {ListenerName},
		resource.RouteType:    {RouteConfigName},
		resource.ClusterType:  {"deploy-broken", "deploy-cold", "deploy-warm", ActivatorCluster, APICluster},
		resource.EndpointType: {"deploy-broken", "deploy-cold", "deploy-warm", ActivatorCluster},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("resources (-want +got):\n%s", diff)
	}
}

// lbView is a ClusterLoadAssignment as (priority, addr, health) rows.
type lbView struct {
	Priority uint32
	Addr     string
	Health   string
}

func viewLoad(cla *endpoint.ClusterLoadAssignment) []lbView {
	var out []lbView
	for _, l := range cla.GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			out = append(out, lbView{l.GetPriority(), sa.GetAddress() + ":" + itoa(sa.GetPortValue()), e.GetHealthStatus().String()})
		}
	}
	return out
}

func itoa(n uint32) string { return strconv.FormatUint(uint64(n), 10) }

func TestBuildPriorities(t *testing.T) {
	res := resources(t, testState())
	loads := map[string][]lbView{}
	for _, r := range res[resource.EndpointType] {
		cla := r.(*endpoint.ClusterLoadAssignment)
		loads[cla.GetClusterName()] = viewLoad(cla)
	}
	act := []lbView{{1, "127.0.0.1:8081", "UNKNOWN"}, {1, "127.0.0.1:8082", "UNKNOWN"}}
	want := map[string][]lbView{
		// Ready instances first, a draining one out of load balancing, the
		// activators as the fallback priority.
		"deploy-warm": append([]lbView{{0, "127.0.0.1:9001", "HEALTHY"}, {0, "127.0.0.1:9002", "DRAINING"}}, act...),
		// No instance: everything fails over to the activators.
		"deploy-cold": act,
		// A failed deployment's instances get nothing: the activator fails
		// its requests with the reason.
		"deploy-broken":  act,
		ActivatorCluster: {{0, "127.0.0.1:8081", "UNKNOWN"}, {0, "127.0.0.1:8082", "UNKNOWN"}},
	}
	if diff := cmp.Diff(want, loads); diff != "" {
		t.Errorf("load assignments (-want +got):\n%s", diff)
	}
}

func TestBuildRoutes(t *testing.T) {
	res := resources(t, testState())
	rc := res[resource.RouteType][0].(*route.RouteConfiguration)
	type rv struct {
		Name, Cluster       string
		Timeout, Idle       time.Duration
		Retry               string
		AuthzOff, Rewrites  bool
		DeployHeader, Route string
		Removes, Adds       string
		Methods             string
	}
	var got []rv
	for _, r := range rc.GetVirtualHosts()[0].GetRoutes() {
		a := r.GetRoute()
		v := rv{
			Name: r.GetName(), Cluster: a.GetCluster(), Timeout: a.GetTimeout().AsDuration(), Idle: a.GetIdleTimeout().AsDuration(),
			Retry: a.GetRetryPolicy().GetRetryOn(), Rewrites: a.GetRegexRewrite() != nil,
			Removes: strings.Join(r.GetRequestHeadersToRemove(), ","),
		}
		for _, h := range r.GetRequestHeadersToAdd() {
			v.Adds += fmt.Sprintf("%s=%s(%s)", h.GetHeader().GetKey(), h.GetHeader().GetValue(), h.GetAppendAction())
		}
		if pf, ok := r.GetTypedPerFilterConfig()["envoy.filters.http.ext_authz"]; ok {
			var per extauthz.ExtAuthzPerRoute
			if err := pf.UnmarshalTo(&per); err != nil {
				t.Fatal(err)
			}
			v.AuthzOff = per.GetDisabled()
		}
		for _, h := range r.GetMatch().GetHeaders() {
			switch h.GetName() {
			case "x-thaw-deploy-id":
				v.DeployHeader = h.GetStringMatch().GetExact()
			case "x-thaw-route":
				v.Route = h.GetStringMatch().GetExact()
			case ":method":
				v.Methods = h.GetStringMatch().GetSafeRegex().GetRegex()
			}
		}
		got = append(got, v)
	}
	idle := 2*time.Minute + HoldMargin
	const retry = "connect-failure,refused-stream,reset-before-request"
	const removed = "authorization,x-thaw-deploy-id,x-thaw-route,x-thaw-hold-timeout"
	const json = "content-type=application/json(OVERWRITE_IF_EXISTS_OR_ADD)"
	want := []rv{
		// Sorted by id; the failed deployment has no direct route.
		// The direct routes remove the caller's token and the routing
		// headers: they may reach a model server.
		// They tell the model server the body is JSON, and retry a request
		// an instance reset (it died under it).
		{Name: "deploy-cold", Cluster: "deploy-cold", Idle: idle, Retry: retry + ",reset", Rewrites: true, DeployHeader: "cold", Route: "direct", Removes: removed, Adds: json},
		{Name: "deploy-warm", Cluster: "deploy-warm", Idle: idle, Retry: retry + ",reset", Rewrites: true, DeployHeader: "warm", Route: "direct", Removes: removed, Adds: json},
		{Name: "activator", Cluster: ActivatorCluster, Idle: idle, Retry: retry + ",reset"},
		// The catch-all is last, to thaw, with ext_authz off. Reads are
		// retried when their replica dies under them, the rest only when
		// it cannot have seen them.
		{Name: "thaw-api-read", Cluster: APICluster, Idle: idle, Retry: retry + ",reset", AuthzOff: true, Methods: "GET|HEAD"},
		{Name: "thaw-api", Cluster: APICluster, Idle: idle, Retry: retry, AuthzOff: true},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("routes (-want +got):\n%s", diff)
	}
}

func TestBuildListener(t *testing.T) {
	res := resources(t, testState())
	lis := res[resource.ListenerType][0].(*listener.Listener)
	var m hcm.HttpConnectionManager
	if err := lis.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&m); err != nil {
		t.Fatal(err)
	}
	var filters []string
	for _, f := range m.GetHttpFilters() {
		filters = append(filters, f.GetName())
	}
	var az extauthz.ExtAuthz
	if err := m.GetHttpFilters()[0].GetTypedConfig().UnmarshalTo(&az); err != nil {
		t.Fatal(err)
	}
	type view struct {
		Filters         []string
		StreamIdle      time.Duration
		RDS             string
		AuthzCluster    string
		AuthzPrefix     string
		AuthzBody       uint32
		Partial, Clear  bool
		UpstreamHeaders []string
		StatusOnError   int32
		ListenOn        string
	}
	got := view{
		Filters: filters, StreamIdle: m.GetStreamIdleTimeout().AsDuration(), RDS: m.GetRds().GetRouteConfigName(),
		AuthzCluster: az.GetHttpService().GetServerUri().GetCluster(), AuthzPrefix: az.GetHttpService().GetPathPrefix(),
		AuthzBody: az.GetWithRequestBody().GetMaxRequestBytes(), Partial: az.GetWithRequestBody().GetAllowPartialMessage(),
		Clear: az.GetClearRouteCache(), StatusOnError: int32(az.GetStatusOnError().GetCode()),
		ListenOn: lis.GetAddress().GetSocketAddress().GetAddress(),
	}
	for _, p := range az.GetHttpService().GetAuthorizationResponse().GetAllowedUpstreamHeaders().GetPatterns() {
		got.UpstreamHeaders = append(got.UpstreamHeaders, p.GetExact())
	}
	want := view{
		Filters:    []string{"envoy.filters.http.ext_authz", "envoy.filters.http.router"},
		StreamIdle: 3 * time.Minute, RDS: RouteConfigName,
		AuthzCluster: APICluster, AuthzPrefix: "/authz", AuthzBody: 64 << 10, Partial: true, Clear: true,
		UpstreamHeaders: []string{"x-thaw-deploy-id", "x-thaw-route", "x-thaw-grant"}, StatusOnError: 503, ListenOn: "127.0.0.1",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("listener (-want +got):\n%s", diff)
	}
}

func TestBuildClusters(t *testing.T) {
	st := testState()
	st.APIs = []string{"thaw.internal:8080", "127.0.0.1:8081"} // a name: resolved by DNS
	res := resources(t, st)
	got := map[string]string{}
	for _, r := range res[resource.ClusterType] {
		c := r.(*cluster.Cluster)
		got[c.GetName()] = c.GetType().String() + " " + c.GetLbPolicy().String() + " " +
			itoa(c.GetCircuitBreakers().GetThresholds()[0].GetMaxRequests().GetValue())
	}
	want := map[string]string{
		APICluster:       "STRICT_DNS ROUND_ROBIN 100000",
		ActivatorCluster: "EDS LEAST_REQUEST 100000",
		"deploy-warm":    "EDS LEAST_REQUEST 100000",
		"deploy-cold":    "EDS LEAST_REQUEST 100000",
		"deploy-broken":  "EDS LEAST_REQUEST 100000",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("clusters (-want +got):\n%s", diff)
	}
}

func TestBuildDefaultsAndVersion(t *testing.T) {
	st := testState()
	st.Activators = nil
	st.HoldTimeout = 0
	res := resources(t, st)
	for _, r := range res[resource.EndpointType] {
		cla := r.(*endpoint.ClusterLoadAssignment)
		if cla.GetClusterName() == ActivatorCluster {
			if diff := cmp.Diff([]lbView{{0, "127.0.0.1:8080", "UNKNOWN"}}, viewLoad(cla)); diff != "" {
				t.Errorf("no activators: thaw's API holds (-want +got):\n%s", diff)
			}
		}
	}
	rc := res[resource.RouteType][0].(*route.RouteConfiguration)
	if got := rc.GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetIdleTimeout().AsDuration(); got != DefaultHoldTimeout+HoldMargin {
		t.Errorf("idle timeout = %v, want %v", got, DefaultHoldTimeout+HoldMargin)
	}

	// The version is a function of the state: equal states, equal versions
	// (Envoy is not sent what it has); a change, a new version.
	a, _ := Build(testState())
	b, _ := Build(testState())
	changed := testState()
	changed.Deployments[0].Endpoints = changed.Deployments[0].Endpoints[:1]
	c, _ := Build(changed)
	for _, typ := range []string{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType} {
		if a.GetVersion(typ) == "" || a.GetVersion(typ) != b.GetVersion(typ) {
			t.Errorf("%s: same state, versions %q and %q", typ, a.GetVersion(typ), b.GetVersion(typ))
		}
	}
	// An instance leaving changes endpoints only.
	changedTypes := map[string]bool{}
	for _, typ := range []string{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType} {
		changedTypes[typ] = a.GetVersion(typ) != c.GetVersion(typ)
	}
	want := map[string]bool{resource.ListenerType: false, resource.RouteType: false, resource.ClusterType: false, resource.EndpointType: true}
	if diff := cmp.Diff(want, changedTypes); diff != "" {
		t.Errorf("types whose version changed (-want +got):\n%s", diff)
	}
}

func TestBuildRejects(t *testing.T) {
	tests := map[string]func(*State){
		"no listener":        func(s *State) { s.Listen = "" },
		"no api":             func(s *State) { s.APIs = nil },
		"bad port":           func(s *State) { s.APIs = []string{"127.0.0.1:99999"} },
		"one bad api":        func(s *State) { s.APIs = []string{"127.0.0.1:8080", "127.0.0.1"} },
		"name in eds":        func(s *State) { s.Deployments[0].Endpoints[0].Addr = "host:9000" },
		"activator no port":  func(s *State) { s.Activators = []string{"127.0.0.1"} },
		"duplicate id":       func(s *State) { s.Deployments[1].ID = "warm" },
		"empty id":           func(s *State) { s.Deployments[1].ID = "" },
		"listener not an ip": func(s *State) { s.Listen = "localhost:10000" },
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			st := testState()
			mutate(&st)
			if _, err := Build(st); !errors.Is(err, ErrInvalidState) {
				t.Errorf("Build = %v, want ErrInvalidState", err)
			}
		})
	}
}

// apiView is what an operator checks of the thaw-api cluster and the
// ext_authz service that calls it.
type apiView struct {
	Hosts          []string
	EjectAfter     uint32 // failed connections
	AuthzCluster   string
	AuthzRetryOn   string
	AuthzRetries   uint32
	AuthzPredicate string
	Activators     []lbView
}

func viewAPIs(t *testing.T, st State) apiView {
	t.Helper()
	res := resources(t, st)
	var v apiView
	for _, r := range res[resource.ClusterType] {
		if c := r.(*cluster.Cluster); c.GetName() == APICluster {
			for _, e := range viewLoad(c.GetLoadAssignment()) {
				v.Hosts = append(v.Hosts, e.Addr)
			}
			v.EjectAfter = c.GetOutlierDetection().GetConsecutiveLocalOriginFailure().GetValue()
		}
	}
	for _, r := range res[resource.EndpointType] {
		if cla := r.(*endpoint.ClusterLoadAssignment); cla.GetClusterName() == ActivatorCluster {
			v.Activators = viewLoad(cla)
		}
	}
	var m hcm.HttpConnectionManager
	if err := res[resource.ListenerType][0].(*listener.Listener).GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&m); err != nil {
		t.Fatal(err)
	}
	var az extauthz.ExtAuthz
	if err := m.GetHttpFilters()[0].GetTypedConfig().UnmarshalTo(&az); err != nil {
		t.Fatal(err)
	}
	rp := az.GetHttpService().GetRetryPolicy()
	v.AuthzCluster = az.GetHttpService().GetServerUri().GetCluster()
	v.AuthzRetryOn, v.AuthzRetries = rp.GetRetryOn(), rp.GetNumRetries().GetValue()
	for _, p := range rp.GetRetryHostPredicate() {
		v.AuthzPredicate += p.GetName()
	}
	return v
}

// TestBuildAPIs: with several thaw server replicas, the catch-all and
// /authz reach all of them (each once, in one order), a replica that stops
// accepting connections is ejected and a check that could not connect is
// retried on another replica; with no --activators, every replica holds
// requests.
func TestBuildAPIs(t *testing.T) {
	st := testState()
	st.APIs = []string{"127.0.0.1:8081", "127.0.0.1:8080", "127.0.0.1:8081"}
	st.Activators = nil
	want := apiView{
		Hosts:          []string{"127.0.0.1:8080", "127.0.0.1:8081"},
		EjectAfter:     1,
		AuthzCluster:   APICluster,
		AuthzRetryOn:   "connect-failure,refused-stream,reset-before-request,reset",
		AuthzRetries:   3,
		AuthzPredicate: "envoy.retry_host_predicates.previous_hosts",
		Activators:     []lbView{{0, "127.0.0.1:8080", "UNKNOWN"}, {0, "127.0.0.1:8081", "UNKNOWN"}},
	}
	if diff := cmp.Diff(want, viewAPIs(t, st)); diff != "" {
		t.Errorf("two replicas (-want +got):\n%s", diff)
	}
	// Activators given: they, not the API replicas, hold requests.
	st.Activators = []string{"127.0.0.1:9090"}
	want.Activators = []lbView{{0, "127.0.0.1:9090", "UNKNOWN"}}
	if diff := cmp.Diff(want, viewAPIs(t, st)); diff != "" {
		t.Errorf("two replicas, one activator (-want +got):\n%s", diff)
	}
}
