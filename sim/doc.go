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
//   - Each request generates max_tokens tokens (default 16) at a fixed rate;
//     the text cycles a small word list, one word per token, and a prompt
//     counts one token per whitespace-separated word.
//   - At most MaxNumSeqs requests generate at once; the rest wait in FIFO
//     order and show as waiting in /metrics. A client that disconnects
//     frees its place at once.
//   - Errors use OpenAI's shape {"error": {"message", "type", "param",
//     "code"}}: 404 for an unknown model, 400 for bad input; never a 5xx.
//
// A Server is built with New and served with Run, or mounted with Handler.
package sim
