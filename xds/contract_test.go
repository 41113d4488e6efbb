package xds

import (
	"regexp"
	"testing"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/routing"
)

// TestRoutePaths: the direct routes take exactly the OpenAI paths of
// package routing, in both spellings, and rewrite the alias to the path
// model servers serve; the activator route takes those and the native
// path; nothing else is routed as inference (thaw's API answers it).
func TestRoutePaths(t *testing.T) {
	res := resources(t, testState())
	byName := map[string]*route.Route{}
	for _, r := range res[resource.RouteType][0].(*route.RouteConfiguration).GetVirtualHosts()[0].GetRoutes() {
		byName[r.GetName()] = r
	}
	compile := func(name string) *regexp.Regexp {
		t.Helper()
		r, ok := byName[name]
		if !ok {
			t.Fatalf("no route %q", name)
		}
		return regexp.MustCompile(r.GetMatch().GetSafeRegex().GetRegex())
	}
	direct, activator := compile("deploy-warm"), compile("activator")
	rw := byName["deploy-warm"].GetRoute().GetRegexRewrite()
	rewrite := func(p string) string {
		return regexp.MustCompile(rw.GetPattern().GetRegex()).ReplaceAllLiteralString(p, rw.GetSubstitution())
	}

	type match struct{ Direct, Activator bool }
	type served struct {
		Match    match
		Upstream string
	}
	got, want := map[string]served{}, map[string]served{}
	for _, p := range routing.OpenAIPaths() {
		for _, client := range []string{p, routing.Alias(p)} {
			want[client] = served{match{true, true}, p}
			got[client] = served{match{direct.MatchString(client), activator.MatchString(client)}, rewrite(client)}
		}
	}
	if len(want) != 4 {
		t.Errorf("OpenAI paths and aliases: %d, want 4 (chat and completions, each under /v1 and /v1/openai)", len(want))
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("OpenAI paths (-want +got):\n%s", diff)
	}

	for _, tc := range []struct {
		path string
		want match
	}{
		{routing.NativePrefix + "alice/m", match{false, true}},
		{"/v1/inference/alice/m/x", match{false, true}}, // thaw's 404
		{"/v1/inference/", match{}},
		{"/v1/models", match{}},
		{"/v1/openai/models", match{}},
		{"/v1/models/alice/m", match{}},
		{"/v1/embeddings", match{}},
		{"/v1/chat/completions/", match{}},
		{"/v1/chat/completionsx", match{}},
		{"/v1/chatXcompletions", match{}},
		{"/v1/openai/openai/completions", match{}},
		{"/v1/openaichat/completions", match{}},
		{"/v2/chat/completions", match{}},
		{"/authz/v1/chat/completions", match{}},
		{"/x/v1/completions", match{}},
		{"/deploy/list", match{}},
		{"/healthz", match{}},
		{"/", match{}},
	} {
		got := match{direct.MatchString(tc.path), activator.MatchString(tc.path)}
		if got != tc.want {
			t.Errorf("%s: (direct, activator) = %v, want %v", tc.path, got, tc.want)
		}
	}
}
