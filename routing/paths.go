package routing

import (
	"slices"
	"strings"
)

// Path prefixes of inference requests.
const (
	// OpenAIPrefix is the prefix of the OpenAI-compatible API as model
	// servers (vLLM, thaw sim) serve it.
	OpenAIPrefix = "/v1"
	// OpenAIAliasPrefix is DeepInfra's spelling of the same API: a client's
	// OpenAIAliasPrefix+p is OpenAIPrefix+p, and is rewritten so before a
	// model server sees it.
	OpenAIAliasPrefix = "/v1/openai"
	// NativePrefix starts DeepInfra's native inference path,
	// NativePrefix+"<owner>/<model_name>" (POST). Only thaw serves it: it
	// translates the body into an OpenAI completion.
	NativePrefix = "/v1/inference/"
)

// openAIPaths are the OpenAI-compatible inference paths (POST), as model
// servers serve them.
var openAIPaths = []string{OpenAIPrefix + "/chat/completions", OpenAIPrefix + "/completions"}

// OpenAIPaths returns the OpenAI-compatible inference paths (POST) as model
// servers serve them, each under OpenAIPrefix. A client may also call each
// under OpenAIAliasPrefix (see Alias). These are the only paths the edge may
// send straight to a model server.
func OpenAIPaths() []string { return slices.Clone(openAIPaths) }

// Alias returns OpenAI path p (under OpenAIPrefix) as DeepInfra spells it,
// under OpenAIAliasPrefix: "/v1/chat/completions" is
// "/v1/openai/chat/completions".
func Alias(p string) string {
	return OpenAIAliasPrefix + strings.TrimPrefix(p, OpenAIPrefix)
}

// IsOpenAIPath reports whether p, as a client sent it, is an
// OpenAI-compatible inference path: one of OpenAIPaths or its Alias.
func IsOpenAIPath(p string) bool {
	for _, op := range openAIPaths {
		if p == op || p == Alias(op) {
			return true
		}
	}
	return false
}
