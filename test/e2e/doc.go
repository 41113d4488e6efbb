// Package e2e is the shared harness of thaw's end-to-end suites (test/,
// test/envoy, test/nomad) and of the bench (bench/cmd/thawbench): it builds
// thaw once, starts thaw, Envoy, Redis and a Nomad dev agent as child
// processes that die with the caller (Pdeathsig) and keep their output for
// failure reports, reads Envoy's admin endpoints and polls conditions.
//
// It is ordinary, importable Go code, in the way Knative's test package
// serves its e2e, conformance and performance suites: a suite keeps only
// its own topology and assertions.
//
// Functions that start something return an error; the *T variants (StartT,
// RedisT, ...) are the same for a test: they fail it, skip it when a binary
// is missing outside CI (see Need), and register the cleanup.
package e2e
