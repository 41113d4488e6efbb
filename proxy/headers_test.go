package proxy

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/thawhq/thaw/internal/metrictest"
	"github.com/thawhq/thaw/routing"
)

func TestHoldFor(t *testing.T) {
	tests := []struct {
		header  string
		want    time.Duration
		wantErr bool
	}{
		{"", time.Minute, false},
		{"30s", 30 * time.Second, false},
		{" 300ms ", 300 * time.Millisecond, false},
		{"0s", 0, false},
		{"1h", time.Minute, false}, // never above the server's
		{"-1s", 0, true},
		{"30", 0, true}, // a duration needs a unit
		{"soon", 0, true},
	}
	for _, tt := range tests {
		got, herr := holdFor(http.Header{routing.HoldTimeoutHeader: {tt.header}}, time.Minute)
		if (herr != nil) != tt.wantErr || got != tt.want {
			t.Errorf("holdFor(%q) = %s, %v; want %s, error %v", tt.header, got, herr, tt.want, tt.wantErr)
		}
		if herr != nil && (herr.Status != http.StatusBadRequest || herr.Param != routing.HoldTimeoutHeader) {
			t.Errorf("holdFor(%q) error = %d param %q, want 400 naming %s", tt.header, herr.Status, herr.Param, routing.HoldTimeoutHeader)
		}
	}
}

// TestHoldTimeoutHeader: a request may lower its own hold, never raise it;
// an invalid value is refused before anything is held.
func TestHoldTimeoutHeader(t *testing.T) {
	tests := []struct {
		name       string
		serverHold time.Duration
		path, body string
		header     string
		want       apiErr
		wantHold   string // the hold the message states
		minWait    time.Duration
	}{
		{"lowers the hold", 10 * time.Second, "/v1/openai/chat/completions", chatBody, "150ms",
			apiErr{Status: 503, Type: "service_unavailable_error", Code: "no_capacity", RetryAfter: "30"}, "(150ms)", 150 * time.Millisecond},
		{"never raises it", 150 * time.Millisecond, "/v1/openai/chat/completions", chatBody, "1h",
			apiErr{Status: 503, Type: "service_unavailable_error", Code: "no_capacity", RetryAfter: "30"}, "(150ms)", 150 * time.Millisecond},
		{"zero does not wait", 10 * time.Second, "/v1/completions", `{"model":"deploy_id:d1","prompt":"x"}`, "0s",
			apiErr{Status: 503, Type: "service_unavailable_error", Code: "no_capacity", RetryAfter: "30"}, "(0s)", 0},
		{"native lowers the hold", 10 * time.Second, "/v1/inference/alice/m", `{"input":"x"}`, "150ms",
			apiErr{Status: 503, Type: "service_unavailable_error", Code: "no_capacity", RetryAfter: "30"}, "(150ms)", 150 * time.Millisecond},
		{"invalid", 10 * time.Second, "/v1/openai/chat/completions", chatBody, "soon",
			apiErr{Status: 400, Type: "invalid_request_error", Code: "invalid_header", Param: strp(routing.HoldTimeoutHeader)}, routing.HoldTimeoutHeader, 0},
		{"negative", 10 * time.Second, "/v1/inference/alice/m", `{"input":"x"}`, "-5s",
			apiErr{Status: 400, Type: "invalid_request_error", Code: "invalid_header", Param: strp(routing.HoldTimeoutHeader)}, routing.HoldTimeoutHeader, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{HoldTimeout: tt.serverHold})
			start := time.Now()
			r := h.do(context.Background(), "alice", http.MethodPost, tt.path, tt.body, http.Header{routing.HoldTimeoutHeader: {tt.header}})
			waited := time.Since(start)
			got, msg := errOf(t, r)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("error (-want +got):\n%s\nmessage: %s", diff, msg)
			}
			if !strings.Contains(msg, tt.wantHold) {
				t.Errorf("message %q does not state %q", msg, tt.wantHold)
			}
			if waited < tt.minWait || waited > tt.minWait+2*time.Second {
				t.Errorf("answered after %s, want about %s", waited, tt.minWait)
			}
			if c := h.p.Counts()["d1"]; c != (Load{}) {
				t.Errorf("counts after the answer = %v", c)
			}
		})
	}
}

// TestWaitHeaders: a request that waited for an instance to start gets
// X-Thaw-Cold-Start and is counted in the cold-start histogram; one that
// waited only for a busy slot of a ready instance gets X-Thaw-Queue-Time
// instead; one that did not wait gets neither.
func TestWaitHeaders(t *testing.T) {
	tests := []struct {
		name      string
		setup     func(h *harness, up *blockingUpstream) (release func())
		wantCold  bool
		wantQueue bool
	}{
		{"warm", func(h *harness, up *blockingUpstream) func() {
			h.p.SetEndpoints("d1", 1, map[string]string{"i1": up.addr()})
			return func() {}
		}, false, false},
		{"cold", func(h *harness, up *blockingUpstream) func() {
			return func() {
				h.waitHeld("d1", 1)
				// Not a wait for a state: the hold must last long enough to
				// show in a header rounded to the millisecond.
				time.Sleep(20 * time.Millisecond)
				h.p.SetEndpoints("d1", 1, map[string]string{"i1": up.addr()})
			}
		}, true, false},
		{"queued behind a busy slot", func(h *harness, up *blockingUpstream) func() {
			h.p.SetEndpoints("d1", 1, map[string]string{"i1": up.addr()})
			busy := h.postAsync(context.Background(), "alice", "/v1/chat/completions", seqBody(0))
			up.next(h.t)
			return func() {
				h.waitHeld("d1", 1)
				// Not a wait for a state: the hold must last long enough to
				// show in a header rounded to the millisecond.
				time.Sleep(20 * time.Millisecond)
				up.releaseOne(h.t) // the busy one
				wait(h.t, busy, 3*time.Second)
			}
		}, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reader := sdkmetric.NewManualReader()
			h := newHarness(t, Config{MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))})
			up := newBlockingUpstream(t)
			release := tt.setup(h, up)
			ch := h.postAsync(context.Background(), "alice", "/v1/chat/completions", seqBody(1))
			release()
			if s := up.next(t); s != 1 {
				t.Fatalf("model server got seq %d, want 1", s)
			}
			up.releaseOne(t)
			r := wait(t, ch, 3*time.Second)
			if r.status != http.StatusOK {
				t.Fatalf("status %d body %s", r.status, r.body)
			}
			for header, want := range map[string]bool{routing.ColdStartHeader: tt.wantCold, routing.QueueTimeHeader: tt.wantQueue} {
				v := r.header.Get(header)
				if (v != "") != want {
					t.Errorf("%s = %q, want present %v", header, v, want)
					continue
				}
				if d, err := time.ParseDuration(v); want && (err != nil || d < 20*time.Millisecond) {
					t.Errorf("%s = %q (%v), want the time waited (>= 20ms)", header, v, err)
				}
			}
			wantCount := uint64(0)
			if tt.wantCold {
				wantCount = 1
			}
			if n := coldStarts(t, reader); n != wantCount {
				t.Errorf("cold-start histogram count = %d, want %d", n, wantCount)
			}
		})
	}
}

// coldStarts is the number of cold starts recorded.
func coldStarts(t *testing.T, reader sdkmetric.Reader) uint64 {
	t.Helper()
	m, _ := metrictest.Find(t, reader, "thaw.cold_start.duration")
	h, _ := m.Data.(metricdata.Histogram[float64])
	var n uint64
	for _, dp := range h.DataPoints {
		n += dp.Count
	}
	return n
}
