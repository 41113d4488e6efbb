// Package routing is the HTTP contract that thaw's activator (package
// proxy, with its /authz service), the authentication of the edge's grants
// (package auth) and the Envoy edge that thaw configures (package xds) must
// agree on: which paths are inference requests, the headers /authz answers
// with and Envoy routes on, and thaw's own request and response headers.
//
// Each name is defined here once and the other packages derive what they
// need from it: proxy registers its handlers on Paths and classifies
// requests with IsOpenAIPath; xds builds its route regexes from the same
// paths (PathRegexp) and lowercases the header names for Envoy. The package
// imports nothing of thaw.
//
// Header names are in Go's canonical form, as net/http sends them; HTTP
// header names are case-insensitive, and Envoy sees them lowercased.
package routing
