package test

import (
	"context"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/thawhq/thaw/test/e2e"
)

// scrape returns the samples of GET /metrics on the operators' listener.
func (p *thawProc) scrape(t *testing.T) []e2e.Sample {
	t.Helper()
	m, err := e2e.ScrapeMetrics(context.Background(), p.Metrics+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	return m.Samples
}

// mentions reports whether one of s's label values contains k ("" matches
// every sample): k is a deploy id or a model name, which thaw's series
// carry in labels whose names this suite does not pin down.
func mentions(s e2e.Sample, k string) bool {
	if k == "" {
		return true
	}
	for _, v := range s.Labels {
		if strings.Contains(v, k) {
			return true
		}
	}
	return false
}

// findMetrics returns the samples whose name contains every one of nameParts and
// whose labels mention one of keys (a deploy id or model name).
func findMetrics(ms []e2e.Sample, keys []string, nameParts ...string) []e2e.Sample {
	var out []e2e.Sample
	for _, m := range ms {
		ok := true
		for _, part := range nameParts {
			if !strings.Contains(m.Name, part) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		for _, k := range keys {
			if mentions(m, k) {
				out = append(out, m)
				break
			}
		}
	}
	return out
}

// isGaugeName reports whether a sample name is not a histogram or counter
// series (those end in _bucket, _sum, _count, _total or _created).
func isGaugeName(name string) bool {
	for _, suf := range []string{"_bucket", "_sum", "_count", "_total", "_created"} {
		if strings.HasSuffix(name, suf) {
			return false
		}
	}
	return true
}

// heldGauge sums the gauge samples with "held" in their name for a
// deployment; ok is false when there is no such sample.
func heldGauge(ms []e2e.Sample, keys []string) (float64, bool) {
	sum, found := 0.0, false
	for _, m := range findMetrics(ms, keys, "held") {
		if isGaugeName(m.Name) {
			sum += m.Value
			found = true
		}
	}
	return sum, found
}

func rawLines(ms []e2e.Sample) string {
	var b strings.Builder
	for _, m := range ms {
		b.WriteString(m.Line)
		b.WriteByte('\n')
	}
	return b.String()
}

// TestMetrics: after a cold start, /metrics has, per deployment, a
// cold-start duration histogram, instance counts by state, held requests and
// in-flight requests.
func TestMetrics(t *testing.T) {
	t.Parallel()
	p := startThaw(t, thawOpts{})
	name := uniqueName("metrics")
	d := p.create(t, devToken, llmRequest(name, "A100-80GB", 1, 8, 0, 1))
	if msg := checkChat(p.chat(t, "dev/"+name, 4), 4); msg != "" {
		t.Fatalf("cold request: %s", msg)
	}
	keys := []string{d.ID, name}

	// The samples may be recorded just after the answer: allow 2s.
	var problems []string
	waitFor(2*time.Second, 100*time.Millisecond, func() bool {
		problems = metricProblems(p.scrape(t), keys)
		return len(problems) == 0
	})
	for _, pr := range problems {
		t.Errorf("%s: %s", name, pr)
	}
}

// metricProblems lists what a deployment that just cold-started lacks in
// /metrics.
func metricProblems(ms []e2e.Sample, keys []string) []string {
	var problems []string
	var count float64
	cold := findMetrics(ms, keys, "cold_start")
	buckets := 0
	for _, m := range cold {
		if strings.HasSuffix(m.Name, "_count") {
			count += m.Value
		}
		if strings.HasSuffix(m.Name, "_bucket") {
			buckets++
		}
	}
	if count < 1 || buckets == 0 {
		problems = append(problems, "no cold-start histogram (name containing cold_start, with _bucket and _count >= 1); cold_start samples:\n"+rawLines(cold))
	}

	inst := findMetrics(ms, keys, "instances")
	serving := 0.0
	for _, m := range inst {
		for _, state := range []string{"running", "ready"} {
			if slices.Contains(slices.Collect(maps.Values(m.Labels)), state) || strings.Contains(m.Name, state) {
				serving += m.Value
			}
		}
	}
	if serving < 1 {
		problems = append(problems, "no running (or ready) instance counted in samples named *instances*:\n"+rawLines(inst))
	}

	if _, ok := heldGauge(ms, keys); !ok {
		problems = append(problems, "no held-requests gauge; samples with held:\n"+rawLines(findMetrics(ms, []string{""}, "held")))
	}
	if len(findMetrics(ms, keys, "flight")) == 0 {
		problems = append(problems, "no in-flight sample; samples with flight:\n"+rawLines(findMetrics(ms, []string{""}, "flight")))
	}
	return problems
}

// TestNativeInference: POST /v1/inference/<owner>/<model> with DeepInfra's
// native body answers with generated text and token counts.
func TestNativeInference(t *testing.T) {
	t.Parallel()
	p := startThaw(t, thawOpts{})
	name := uniqueName("native")
	p.create(t, devToken, llmRequest(name, "A100-80GB", 1, 8, 0, 1))
	r := p.do(t, http.MethodPost, "/v1/inference/dev/"+name, devToken, map[string]any{"input": "hello", "max_new_tokens": 8})
	if r.Status != http.StatusOK {
		t.Fatalf("native inference: %s", r)
	}
	var out struct {
		Results []struct {
			GeneratedText string `json:"generated_text"`
		} `json:"results"`
		NumTokens      int `json:"num_tokens"`
		NumInputTokens int `json:"num_input_tokens"`
	}
	r.decode(t, &out)
	if len(out.Results) == 0 || out.Results[0].GeneratedText == "" {
		t.Errorf("native inference: no results[0].generated_text: %s", r)
	}
	if out.NumTokens <= 0 || out.NumInputTokens <= 0 {
		t.Errorf("native inference: num_tokens %d, num_input_tokens %d, want both > 0: %s", out.NumTokens, out.NumInputTokens, r)
	}
}

// TestMetricsNotOnPublicListener: the public listener serves no metrics,
// with or without a token, so no caller learns other tenants' deploy ids or
// model names; the operators' listener has them.
func TestMetricsNotOnPublicListener(t *testing.T) {
	t.Parallel()
	p := startThaw(t, thawOpts{Users: []string{"alice=tok-alice"}})
	name := uniqueName("secret")
	d := p.create(t, devToken, llmRequest(name, "A100-80GB", 1, 8, 0, 1))
	if msg := checkChat(p.chat(t, "dev/"+name, 4), 4); msg != "" {
		t.Fatalf("cold request: %s", msg)
	}
	for _, tok := range []string{"", "tok-alice", devToken} {
		r := p.do(t, http.MethodGet, "/metrics", tok, nil)
		if r.Status != http.StatusNotFound && r.Status != http.StatusUnauthorized {
			t.Errorf("GET /metrics on the public listener with token %q: %d, want 404 or 401", tok, r.Status)
		}
		for _, secret := range []string{d.ID, name} {
			if strings.Contains(string(r.Body), secret) {
				t.Errorf("GET /metrics on the public listener with token %q shows %q", tok, secret)
			}
		}
	}
	if len(findMetrics(p.scrape(t), []string{d.ID}, "")) == 0 {
		t.Errorf("the operators' listener has no series of deployment %s", d.ID)
	}
}
