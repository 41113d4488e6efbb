package xds

import (
	"regexp"
	"strings"

	"github.com/thawhq/thaw/routing"
)

// The routing contract (package routing) in Envoy's terms: header names
// lowercased, as Envoy holds them (its header matchers and ext_authz's
// allowed_upstream_headers compare them so), and RE2 regexes over the
// inference paths.
var (
	deployIDHeader    = strings.ToLower(routing.DeployIDHeader)
	routeHeader       = strings.ToLower(routing.RouteHeader)
	grantHeader       = strings.ToLower(routing.GrantHeader)
	holdTimeoutHeader = strings.ToLower(routing.HoldTimeoutHeader)

	// openAIPath matches the OpenAI-compatible inference paths in both
	// spellings: the paths model servers serve (after the alias is
	// rewritten), so the only ones a direct route takes.
	openAIPath = `^(?:` + strings.Join(quotedOpenAIPaths(), "|") + `)$`
	// inferencePath also matches the native path, which only thaw serves:
	// every request the activator route takes.
	inferencePath = `^(?:` + strings.Join(quotedOpenAIPaths(), "|") + `|` + regexp.QuoteMeta(routing.NativePrefix) + `.+)$`
	// aliasPrefix matches the alias's prefix, which the direct route
	// rewrites to routing.OpenAIPrefix.
	aliasPrefix = `^` + regexp.QuoteMeta(routing.OpenAIAliasPrefix+"/")
)

// quotedOpenAIPaths returns each of routing.OpenAIPaths and its alias,
// quoted for a regex.
func quotedOpenAIPaths() []string {
	var out []string
	for _, p := range routing.OpenAIPaths() {
		out = append(out, regexp.QuoteMeta(p), regexp.QuoteMeta(routing.Alias(p)))
	}
	return out
}
