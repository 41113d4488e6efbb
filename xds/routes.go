package xds

import (
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthz "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	previoushosts "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	previouspriorities "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/priority/previous_priorities/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/thawhq/thaw/routing"
)

// directRemoved are the request headers the direct route removes: the
// caller's token, and thaw's routing and hold headers, which are for thaw
// only. The grant stays: an activator the route falls back to reads it.
var directRemoved = []string{"authorization", deployIDHeader, routeHeader, holdTimeoutHeader}

// buildRoutes: per deployment a direct route (headers set by ext_authz),
// then the activator route for every other inference request, then the
// catch-all to thaw's API with ext_authz off (reads, then the rest). Order
// matters: first match wins.
func buildRoutes(deployments []Deployment, idle time.Duration) *route.RouteConfiguration {
	vh := &route.VirtualHost{Name: "thaw", Domains: []string{"*"}}
	for _, d := range deployments {
		if d.Failed {
			continue // the activator fails its requests at once
		}
		vh.Routes = append(vh.Routes, &route.Route{
			Name: DeployClusterPrefix + d.ID,
			Match: &route.RouteMatch{
				PathSpecifier: &route.RouteMatch_SafeRegex{SafeRegex: regex(openAIPath)},
				Headers: []*route.HeaderMatcher{
					{Name: deployIDHeader, HeaderMatchSpecifier: &route.HeaderMatcher_StringMatch{StringMatch: exact(d.ID)}},
					{Name: routeHeader, HeaderMatchSpecifier: &route.HeaderMatcher_StringMatch{StringMatch: exact(routing.Direct)}},
				},
			},
			Action: &route.Route_Route{Route: directUpstream(DeployClusterPrefix+d.ID, idle)},
			// The caller's token and thaw's routing headers never reach a
			// model server. An activator this route falls back to (priority
			// 1) authenticates the request by its grant instead.
			RequestHeadersToRemove: directRemoved,
			// /authz parsed the body as a JSON object: say so, whatever the
			// client sent (vLLM answers 415 to any other type; `curl -d`
			// sends a form's), as the activator does.
			RequestHeadersToAdd: []*core.HeaderValueOption{{
				Header:       &core.HeaderValue{Key: "content-type", Value: "application/json"},
				AppendAction: core.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
			}},
			Metadata: &core.Metadata{FilterMetadata: map[string]*structpb.Struct{
				"thaw": {Fields: map[string]*structpb.Value{
					"deploy_id": structpb.NewStringValue(d.ID), "model": structpb.NewStringValue(d.Model),
				}},
			}},
		})
	}
	vh.Routes = append(vh.Routes,
		&route.Route{
			Name:   "activator",
			Match:  &route.RouteMatch{PathSpecifier: &route.RouteMatch_SafeRegex{SafeRegex: regex(inferencePath)}},
			Action: &route.Route_Route{Route: activatorUpstream(idle)},
		},
		apiRoute(APIReadRoute, idle, true),
		apiRoute(APIRoute, idle, false),
	)
	return &route.RouteConfiguration{Name: RouteConfigName, VirtualHosts: []*route.VirtualHost{vh}}
}

// apiRoute is a catch-all route to thaw's API replicas, ext_authz off. The
// read route takes GET and HEAD, which change nothing: one a replica was
// answering when it died (reset) is retried on another replica, so a
// replica's death costs readers nothing. Other methods are retried only
// where the replica cannot have seen them: a create the dying replica may
// have stored must not be made twice.
func apiRoute(name string, idle time.Duration, reads bool) *route.Route {
	r := &route.Route{
		Name:   name,
		Match:  &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
		Action: &route.Route_Route{Route: upstream(APICluster, idle, false)},
		TypedPerFilterConfig: map[string]*anypb.Any{
			"envoy.filters.http.ext_authz": mustAny(&extauthz.ExtAuthzPerRoute{
				Override: &extauthz.ExtAuthzPerRoute_Disabled{Disabled: true},
			}),
		},
	}
	if reads {
		r.Match.Headers = []*route.HeaderMatcher{{
			Name:                 ":method",
			HeaderMatchSpecifier: &route.HeaderMatcher_StringMatch{StringMatch: &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_SafeRegex{SafeRegex: regex("GET|HEAD")}}},
		}}
		r.GetRoute().RetryPolicy.RetryOn += ",reset"
	}
	return r
}

// directUpstream is upstream to a deployment's instances, plus retry on
// "reset": an instance that dies under a request (killed, crashed) resets it
// before any answer, and the next try goes to another instance or to the
// activator, which holds it for the replacement. Inference has no side
// effect but its cost; the activator retries such a request the same way.
func directUpstream(clusterName string, idle time.Duration) *route.RouteAction {
	a := upstream(clusterName, idle, true)
	a.RetryPolicy.RetryOn += ",reset"
	return a
}

// activatorUpstream is upstream plus retry on "reset": a request an
// activator held dies with that replica before any model server saw it (and
// one it had forwarded is cancelled with it), so another replica may take
// it; Envoy never retries once response headers went to the client.
func activatorUpstream(idle time.Duration) *route.RouteAction {
	a := upstream(ActivatorCluster, idle, false)
	a.RetryPolicy.RetryOn = "connect-failure,refused-stream,reset-before-request,reset"
	a.RetryPolicy.NumRetries = wrapperspb.UInt32(5)
	a.RetryPolicy.HostSelectionRetryMaxAttempts = 20
	a.RetryPolicy.RetryPriority = nil // one priority: the replicas
	return a
}

// upstream is a route action with LLM-sized timeouts and safe retries.
func upstream(clusterName string, idle time.Duration, rewriteOpenAI bool) *route.RouteAction {
	a := &route.RouteAction{
		ClusterSpecifier: &route.RouteAction_Cluster{Cluster: clusterName},
		// 0 disables the 15 s default that would cut SSE streams.
		Timeout:     durationpb.New(0),
		IdleTimeout: durationpb.New(idle),
		RetryPolicy: &route.RetryPolicy{
			// Only where the model server cannot have seen the request.
			RetryOn:    "connect-failure,refused-stream,reset-before-request",
			NumRetries: wrapperspb.UInt32(3),
			RetryHostPredicate: []*route.RetryPolicy_RetryHostPredicate{{
				Name:       "envoy.retry_host_predicates.previous_hosts",
				ConfigType: &route.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: mustAny(&previoushosts.PreviousHostsPredicate{})},
			}},
			HostSelectionRetryMaxAttempts: 5,
			// After a failed instance, the next attempt may go to the next
			// priority (the activator).
			RetryPriority: &route.RetryPolicy_RetryPriority{
				Name: "envoy.retry_priorities.previous_priorities",
				ConfigType: &route.RetryPolicy_RetryPriority_TypedConfig{TypedConfig: mustAny(&previouspriorities.PreviousPrioritiesConfig{
					UpdateFrequency: 1,
				})},
			},
		},
	}
	if rewriteOpenAI {
		a.RegexRewrite = &matcher.RegexMatchAndSubstitute{Pattern: regex(aliasPrefix), Substitution: routing.OpenAIPrefix + "/"}
	}
	return a
}
