package test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otlpSink is a minimal OTLP/HTTP trace receiver.
type otlpSink struct {
	mu    sync.Mutex
	spans []*tracepb.Span
}

func (s *otlpSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	var req coltrace.ExportTraceServiceRequest
	if err != nil || r.URL.Path != "/v1/traces" || proto.Unmarshal(b, &req) != nil {
		http.Error(w, "bad export", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			s.spans = append(s.spans, ss.Spans...)
		}
	}
	s.mu.Unlock()
	out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

func (s *otlpSink) find(name string) *tracepb.Span {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sp := range s.spans {
		if sp.Name == name {
			return sp
		}
	}
	return nil
}

// TestTracesExported: with OTEL_EXPORTER_OTLP_ENDPOINT set, a cold request
// produces one span covering the hold and the upstream call.
func TestTracesExported(t *testing.T) {
	sink := &otlpSink{}
	collector := httptest.NewServer(sink)
	defer collector.Close()
	p := startThaw(t, thawOpts{Env: []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + collector.URL,
		"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
		"OTEL_BSP_SCHEDULE_DELAY=100",
	}})
	name := uniqueName("trace")
	d := p.create(t, devToken, llmRequest(name, "A100-80GB", 1, 8, 0, 1))
	r := p.chat(t, "dev/"+name, 2)
	if r.Status != http.StatusOK {
		t.Fatalf("chat: %s", r)
	}
	var span *tracepb.Span
	for deadline := time.Now().Add(10 * time.Second); span == nil && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		span = sink.find("thaw.inference")
	}
	if span == nil {
		t.Fatal("no thaw.inference span reached the OTLP collector within 10s")
	}
	attrs := map[string]string{}
	for _, kv := range span.Attributes {
		attrs[kv.Key] = kv.Value.String()
	}
	if got := attrs["thaw.deploy_id"]; got == "" || !strings.Contains(got, d.ID) {
		t.Errorf("span attribute thaw.deploy_id = %q, want %q (attributes %v)", got, d.ID, attrs)
	}
	if attrs["thaw.held_seconds"] == "" {
		t.Errorf("cold request's span has no thaw.held_seconds: the hold is not covered (attributes %v)", attrs)
	}
	// 500ms simulator startup: the span covers the hold.
	if dur := time.Duration(span.EndTimeUnixNano - span.StartTimeUnixNano); dur < 400*time.Millisecond {
		t.Errorf("span lasted %v, want it to cover the ~500ms cold start", dur)
	}
}
