package sim

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Finish reasons, as reported in responses and in
// vllm:request_success_total's finished_reason label.
const (
	finishLength = "length"
	finishStop   = "stop"
	// finishAbort labels requests whose client left before the end.
	finishAbort = "abort"
)

// metrics are the vLLM metrics the simulator exports, on a registry of its
// own so that several servers can live in one process (tests, thaw dev).
type metrics struct {
	registry         *prometheus.Registry
	requestSuccess   *prometheus.CounterVec
	promptTokens     prometheus.Counter
	generationTokens prometheus.Counter
}

// newMetrics registers vLLM's gauges, read live from lim, and counters.
func newMetrics(model string, lim *limiter) *metrics {
	// vLLM labels its metrics with the engine index (one engine: "0").
	labels := prometheus.Labels{"engine": "0", "model_name": model}
	m := &metrics{
		registry: prometheus.NewRegistry(),
		requestSuccess: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "vllm:request_success_total",
			Help:        "Count of successfully processed requests.",
			ConstLabels: labels,
		}, []string{"finished_reason"}),
		promptTokens: prometheus.NewCounter(prometheus.CounterOpts{
			Name:        "vllm:prompt_tokens_total",
			Help:        "Number of prefill tokens processed.",
			ConstLabels: labels,
		}),
		generationTokens: prometheus.NewCounter(prometheus.CounterOpts{
			Name:        "vllm:generation_tokens_total",
			Help:        "Number of generation tokens processed.",
			ConstLabels: labels,
		}),
	}
	gauge := func(name, help string, value func(running, waiting int) float64) prometheus.GaugeFunc {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: labels}, func() float64 {
			return value(lim.counts())
		})
	}
	running := gauge("vllm:num_requests_running", "Number of requests in model execution batches.",
		func(r, _ int) float64 { return float64(r) })
	waiting := gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.",
		func(_, w int) float64 { return float64(w) })
	usage := gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.",
		func(r, _ int) float64 { return float64(r) / float64(lim.max) })
	// Like vLLM, expose the success counter from the start, at zero, with
	// its reasons (the simulator never errs or detects repetition).
	for _, r := range []string{finishStop, finishLength, finishAbort, "error", "repetition"} {
		m.requestSuccess.WithLabelValues(r)
	}
	// The collectors are fresh and their names distinct: registration
	// cannot fail, so MustRegister cannot panic.
	m.registry.MustRegister(m.requestSuccess, m.promptTokens, m.generationTokens,
		running, waiting, usage)
	return m
}

// handler serves the registry in the Prometheus text format.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}
