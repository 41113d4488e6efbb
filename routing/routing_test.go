package routing

import (
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestIsOpenAIPath(t *testing.T) {
	tests := []struct {
		path string
		want bool
	}{
		{"/v1/chat/completions", true},
		{"/v1/completions", true},
		{"/v1/openai/chat/completions", true},
		{"/v1/openai/completions", true},
		{"/v1/models", false},
		{"/v1/openai/models", false},
		{"/v1/embeddings", false},
		{"/v1/chat/completions/", false},
		{"/v1/openai/openai/completions", false},
		{"/v1/inference/alice/m", false},
		{"/authz/v1/chat/completions", false},
		{"/v2/completions", false},
		{"", false},
	}
	for _, tc := range tests {
		if got := IsOpenAIPath(tc.path); got != tc.want {
			t.Errorf("IsOpenAIPath(%q) = %v, want %v", tc.path, got, tc.want)
		}
	}
}

func TestOpenAIPaths(t *testing.T) {
	var got []string
	for _, p := range OpenAIPaths() {
		got = append(got, p, Alias(p))
	}
	want := []string{
		"/v1/chat/completions", "/v1/openai/chat/completions",
		"/v1/completions", "/v1/openai/completions",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("OpenAI paths and aliases (-want +got):\n%s", diff)
	}
	OpenAIPaths()[0] = "/changed"
	if !IsOpenAIPath("/v1/chat/completions") || IsOpenAIPath("/changed") {
		t.Error("changing OpenAIPaths' result changed the contract")
	}
}

// TestHeaderNames: the names clients and the edge send are pinned, and in
// Go's canonical form, so that indexing an http.Header by them finds them.
func TestHeaderNames(t *testing.T) {
	got := []string{DeployIDHeader, RouteHeader, GrantHeader, PartialBodyHeader, HoldTimeoutHeader, ColdStartHeader, QueueTimeHeader}
	want := []string{"X-Thaw-Deploy-Id", "X-Thaw-Route", "X-Thaw-Grant", "X-Envoy-Auth-Partial-Body", "X-Thaw-Hold-Timeout", "X-Thaw-Cold-Start", "X-Thaw-Queue-Time"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("header names (-want +got):\n%s", diff)
	}
	for _, h := range got {
		if c := http.CanonicalHeaderKey(h); c != h {
			t.Errorf("%q is not canonical (%q)", h, c)
		}
	}
}
