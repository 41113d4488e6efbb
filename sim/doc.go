// Package sim is a model-server simulator with vLLM's OpenAI-compatible
// surface, the part of it thaw uses: /health, /v1/models,
// /v1/chat/completions and /v1/completions (whole or streamed as
// server-sent events, with usage) and /metrics with vLLM's
// vllm:num_requests_running, vllm:num_requests_waiting and
// vllm:kv_cache_usage_perc gauges and its request and token counters.
//
// It stands in for vLLM in `thaw dev` and in tests, and behaves the way the
// rest of thaw must cope with:
//
//   - The port is bound at start but answers nothing until a startup delay
//     has passed, as vLLM binds its socket before it loads the weights: a
//     request sent meanwhile waits, then is answered. A port that is taken
//     fails Run at once with "port N is in use".
//   - Each request generates max_tokens tokens per choice (n choices, all
//     in one slot) at a fixed rate, capped at what fits in the context
//     (MaxModelLen) with finish_reason "length". Without max_tokens the
//     simulated model stops by itself after 16 tokens (finish_reason
//     "stop") unless ignore_eos is set. The text cycles a small word
//     list, one word per token, and a prompt counts one token per
//     whitespace-separated word.
//   - At most MaxNumSeqs requests generate at once; the rest wait in FIFO
//     order and show as waiting in /metrics. A client that disconnects
//     frees its place at once.
//   - Errors use OpenAI's shape {"error": {"message", "type", "param",
//     "code"}} with vLLM's types and params: 404 NotFoundError for an
//     unknown model, 400 BadRequestError for bad values (a max_tokens over
//     the context included), 400 "Bad Request" for a body that is not
//     valid JSON; never a 5xx. A route it does not serve answers 404
//     {"detail": "Not Found"} (405 for another method), as vLLM does.
//
// test/conformance runs one suite against the simulator and real vLLM;
// what it checks there is what the simulator promises.
//
// A Server is built with New and served with Run, or mounted with Handler.
package sim
