// Package conformance holds one suite of HTTP tests that runs unchanged
// against `thaw sim` and against real vLLM (on its CPU backend, with a tiny
// random model): what thaw and its users rely on in vLLM's OpenAI-compatible
// surface (chat and text completions, whole and streamed, usage, n, errors,
// /v1/models, /health) and in its Prometheus metrics. A case that passes
// against vLLM and fails against the simulator is a simulator bug.
//
// The suite asserts shapes (statuses, fields present, token accounting),
// never generated text: vLLM's tiny model has random weights.
package conformance
