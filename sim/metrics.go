package sim

import (
	"net/http"
	"time"

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
	// ttft is vllm:time_to_first_token_seconds: from a request's arrival
	// to its first generated token.
	ttft prometheus.Observer
}

// TTFTBuckets are the upper bounds of vLLM's
// vllm:time_to_first_token_seconds histogram (vLLM 0.32's
// TIME_TO_FIRST_TOKEN_BUCKETS), in seconds.
var TTFTBuckets = []float64{0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
	1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0}

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
	ttft := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:        "vllm:time_to_first_token_seconds",
		Help:        "Histogram of time to first token in seconds.",
		ConstLabels: labels,
		Buckets:     TTFTBuckets,
	})
	m.ttft = ttft
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
	m.registry.MustRegister(m.requestSuccess, m.promptTokens, m.generationTokens, ttft,
		running, waiting, usage)
	return m
}

// firstToken records a request's time to first token: from arrived until
// now, when its first token is sent.
func (m *metrics) firstToken(arrived, now time.Time) {
	m.ttft.Observe(now.Sub(arrived).Seconds())
}

// handler serves the registry in the Prometheus text format.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}
