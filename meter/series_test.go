package meter_test

import (
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/thawhq/thaw/meter"
)

// hist is a histogram over bounds 0.1, 0.5, 1 with the given counts per
// bucket (not cumulative; the last is above 1).
func hist(per ...uint64) meter.Histogram {
	h := meter.Histogram{Bounds: []float64{0.1, 0.5, 1}, Counts: make([]uint64, 4)}
	var sum uint64
	for i, c := range per {
		sum += c
		h.Counts[i] = sum
	}
	for i := len(per); i < 4; i++ {
		h.Counts[i] = sum
	}
	return h
}

func TestHistogramQuantile(t *testing.T) {
	cases := []struct {
		name string
		h    meter.Histogram
		q    float64
		want float64
		ok   bool
	}{
		{"empty", meter.Histogram{}, 0.5, 0, false},
		{"no observations", hist(0, 0, 0, 0), 0.5, 0, false},
		// 10 in (0, 0.1]: the median is half way through the first bucket,
		// which starts at 0.
		{"first bucket", hist(10), 0.5, 0.05, true},
		// 4 in (0, 0.1], 4 in (0.1, 0.5]: rank 4 is the first bucket's
		// top; rank 6 is half way through the second.
		{"bucket edge", hist(4, 4), 0.5, 0.1, true},
		{"interpolated", hist(4, 4), 0.75, 0.3, true},
		// Rank 99 of 100 lands in the +Inf bucket: the highest finite
		// bound, as histogram_quantile answers.
		{"+Inf bucket", hist(50, 0, 0, 50), 0.99, 1, true},
		{"q 0", hist(0, 10), 0, 0.1, true},
		{"q 1", hist(0, 10), 1, 0.5, true},
		{"NaN q", hist(1), math.NaN(), 0, false},
		{"counts missing", meter.Histogram{Bounds: []float64{1}, Counts: []uint64{1}}, 0.5, 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok := c.h.Quantile(c.q)
			if ok != c.ok || math.Abs(got-c.want) > 1e-9 {
				t.Errorf("Quantile(%v) = %v, %v; want %v, %v", c.q, got, ok, c.want, c.ok)
			}
		})
	}
}

func TestHistogramDeltaAndAdd(t *testing.T) {
	cases := []struct {
		name      string
		prev, cur meter.Histogram
		want      meter.Histogram
	}{
		{"first read", meter.Histogram{}, hist(1, 2), hist(1, 2)},
		{"grew", hist(1, 2), hist(2, 2, 1), hist(1, 0, 1)},
		{"server restarted", hist(5, 5), hist(1), hist(1)},
		{"other buckets", hist(1), meter.Histogram{Bounds: []float64{1}, Counts: []uint64{1, 1}},
			meter.Histogram{Bounds: []float64{1}, Counts: []uint64{1, 1}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if diff := cmp.Diff(c.want, meter.HistogramDelta(c.prev, c.cur)); diff != "" {
				t.Errorf("HistogramDelta (-want +got):\n%s", diff)
			}
		})
	}
	sum := meter.Histogram{}.Add(hist(1)).Add(hist(0, 2)).Add(meter.Histogram{Bounds: []float64{7}, Counts: []uint64{9, 9}})
	if diff := cmp.Diff(hist(1, 2), sum); diff != "" {
		t.Errorf("Add (-want +got):\n%s", diff)
	}
}

func f(v float64) *float64 { return &v }
func n(v int) *int         { return &v }

func TestSeries(t *testing.T) {
	from := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	at := func(sec int) time.Time { return from.Add(time.Duration(sec) * time.Second) }
	samples := []meter.Sample{
		// Step 0 [0, 10s): two samples.
		{At: at(2), Counts: meter.Counts{Running: 1, Held: 2, InFlight: 1}, Span: 2, Requests: 1, CompletionTokens: 10, TTFT: new(hist(4))},
		{At: at(7), Counts: meter.Counts{Running: 2, Pending: 1, Held: 0, InFlight: 3}, Span: 5, Requests: 6, CompletionTokens: 60, TTFT: new(hist(0, 4))},
		// Step 1 [10s, 20s): no sample at all.
		// Step 2 [20s, 30s): one idle sample, no first token.
		{At: at(25), Counts: meter.Counts{Running: 1}, Span: 10},
		// Outside [from, to): ignored.
		{At: at(-1), Counts: meter.Counts{Running: 9}, Span: 1, Requests: 100},
		{At: at(30), Counts: meter.Counts{Running: 9}, Span: 1, Requests: 100},
	}
	ivs := []meter.Interval{
		{InstanceID: "a", Start: at(0), Ready: at(3).Add(500 * time.Millisecond)},
		{InstanceID: "b", Start: at(1), Ready: at(8)},
		// Ready in the unsampled step: still a cold start.
		{InstanceID: "c", Start: at(9), Ready: at(12)},
		{InstanceID: "not ready", Start: at(5)},
		{InstanceID: "earlier", Start: at(-20), Ready: at(-10)},
	}
	got := meter.Series(samples, ivs, from, at(30), 10*time.Second)
	want := []meter.Point{{
		At: at(0), Running: f(1.5), Starting: f(0), Pending: f(0.5), Draining: f(0),
		Held: f(1), HeldMax: f(2), InFlight: f(2), InFlightMax: f(3),
		// 7 requests and 70 tokens over the 7 seconds the samples span.
		RequestsPerSecond: f(1), TokensPerSecond: f(10),
		// 4 in (0, 0.1], 4 in (0.1, 0.5]: p50 at 100ms; p99 (rank 7.92)
		// 98% through the second bucket.
		TTFTP50ms: f(100), TTFTP99ms: f(492),
		ColdStarts: n(2), ColdStartSeconds: f(7),
	}, {
		At: at(10), ColdStarts: n(1), ColdStartSeconds: f(3),
	}, {
		At: at(20), Running: f(1), Starting: f(0), Pending: f(0), Draining: f(0),
		Held: f(0), HeldMax: f(0), InFlight: f(0), InFlightMax: f(0),
		RequestsPerSecond: f(0), TokensPerSecond: f(0), ColdStarts: n(0),
	}}
	if diff := cmp.Diff(want, got, cmpopts.EquateApprox(0, 1e-9)); diff != "" {
		t.Errorf("Series (-want +got):\n%s", diff)
	}

	// A window that is not a whole number of steps ends with a part step.
	if got := meter.Series(nil, nil, from, at(25), 10*time.Second); len(got) != 3 || got[2].At != at(20) || got[2].Running != nil {
		t.Errorf("Series over 25s by 10s = %+v, want 3 empty points, the last at 20s", got)
	}
	for _, bad := range []struct {
		to   time.Time
		step time.Duration
	}{{at(10), 0}, {from, time.Second}, {at(-5), time.Second}} {
		if got := meter.Series(samples, ivs, from, bad.to, bad.step); got != nil {
			t.Errorf("Series(to %v, step %v) = %v, want nil", bad.to, bad.step, got)
		}
	}
}
