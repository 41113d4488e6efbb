package meter

// A deployment's time series: samples folded into points, one per step.

import (
	"math"
	"slices"
	"time"
)

// Histogram is a Prometheus histogram's cumulative bucket counts, summed
// over label sets: Counts[i] observations were at most Bounds[i], and the
// last count, Counts[len(Bounds)], is every observation (le="+Inf").
type Histogram struct {
	// Bounds are the finite upper bounds (le), ascending.
	Bounds []float64 `json:"le"`
	Counts []uint64  `json:"counts"`
}

// Total is the number of observations.
func (h Histogram) Total() uint64 {
	if len(h.Counts) == 0 {
		return 0
	}
	return h.Counts[len(h.Counts)-1]
}

// valid reports whether h has one count per bound plus +Inf.
func (h Histogram) valid() bool { return len(h.Counts) == len(h.Bounds)+1 }

// HistogramDelta is what a server observed between two reads of its
// histogram, prev then cur, as Delta is for counters: a count lower than
// before, or other bounds, means the server restarted and all of cur is
// new. The zero prev gives cur.
func HistogramDelta(prev, cur Histogram) Histogram {
	if !slices.Equal(prev.Bounds, cur.Bounds) || len(prev.Counts) != len(cur.Counts) {
		return cur
	}
	out := Histogram{Bounds: cur.Bounds, Counts: make([]uint64, len(cur.Counts))}
	for i, c := range cur.Counts {
		if c < prev.Counts[i] {
			return cur
		}
		out.Counts[i] = c - prev.Counts[i]
	}
	return out
}

// Add returns h and o summed. The zero h gives o; o with other bounds than
// a non-empty h is left out (servers of one deployment share vLLM's
// buckets).
func (h Histogram) Add(o Histogram) Histogram {
	if !o.valid() {
		return h
	}
	if !h.valid() {
		return Histogram{Bounds: o.Bounds, Counts: slices.Clone(o.Counts)}
	}
	if !slices.Equal(h.Bounds, o.Bounds) {
		return h
	}
	out := Histogram{Bounds: h.Bounds, Counts: slices.Clone(h.Counts)}
	for i, c := range o.Counts {
		out.Counts[i] += c
	}
	return out
}

// Quantile estimates the q-quantile (0 <= q <= 1) of the observations the
// way Prometheus' histogram_quantile does: it finds the bucket holding the
// rank q*total and interpolates linearly inside it (the first bucket
// starts at 0; a rank in the +Inf bucket gives the highest finite bound).
// ok is false when there are no observations.
func (h Histogram) Quantile(q float64) (v float64, ok bool) {
	if !h.valid() || h.Total() == 0 || math.IsNaN(q) {
		return 0, false
	}
	q = min(max(q, 0), 1)
	rank := q * float64(h.Total())
	b := 0
	for b < len(h.Bounds) && float64(h.Counts[b]) < rank {
		b++
	}
	if b == len(h.Bounds) { // the +Inf bucket
		if b == 0 {
			return 0, false
		}
		return h.Bounds[b-1], true
	}
	start, below := 0.0, 0.0
	if b > 0 {
		start, below = h.Bounds[b-1], float64(h.Counts[b-1])
	}
	end := h.Bounds[b]
	if b == 0 && end <= 0 {
		return end, true
	}
	in := float64(h.Counts[b]) - below
	if in <= 0 {
		return end, true
	}
	return start + (end-start)*(rank-below)/in, true
}

// Point is a deployment's series at one step: the JSON of
// GET /deploy/{id}/stats. A nil field had no data in the step (a gap in a
// chart), which is not the same as a zero.
type Point struct {
	// At is the step's start; the step is [At, At+step).
	At time.Time `json:"at"`
	// Instances by state, averaged over the step's samples.
	Running  *float64 `json:"running"`
	Starting *float64 `json:"starting"`
	Pending  *float64 `json:"pending"`
	Draining *float64 `json:"draining"`
	// Held requests (waiting in an activator for an instance) and requests
	// in flight (forwarded, not answered), averaged and at most.
	Held        *float64 `json:"held"`
	HeldMax     *float64 `json:"held_max"`
	InFlight    *float64 `json:"in_flight"`
	InFlightMax *float64 `json:"in_flight_max"`
	// Finished requests and generated tokens per second, from the model
	// servers' counters.
	RequestsPerSecond *float64 `json:"requests_per_second"`
	TokensPerSecond   *float64 `json:"tokens_per_second"`
	// Time to first token of the requests whose first token came in the
	// step, in milliseconds; nil when none did.
	TTFTP50ms *float64 `json:"ttft_p50_ms"`
	TTFTP99ms *float64 `json:"ttft_p99_ms"`
	// ColdStarts is the instances that became ready in the step (0 when
	// none did in a sampled step); ColdStartSeconds the longest of their
	// cold starts, GPUs held to ready (nil when none).
	ColdStarts       *int     `json:"cold_starts"`
	ColdStartSeconds *float64 `json:"cold_start_seconds"`
}

// Series folds a deployment's samples and the intervals of its instances
// (for their cold starts: Start to Ready) into one point per step from
// from, while before to: gauges averaged (and the max of held and in
// flight), rates as the counters' deltas over the seconds they span, time
// to first token from the step's summed histograms. Samples and intervals
// outside [from, to) are ignored; they need not be sorted. A step of 0 or
// less gives no points. Pure.
func Series(samples []Sample, ivs []Interval, from, to time.Time, step time.Duration) []Point {
	if step <= 0 || !from.Before(to) {
		return nil
	}
	n := int((to.Sub(from) + step - 1) / step)
	accs := make([]stepAcc, n)
	index := func(t time.Time) (int, bool) {
		if t.Before(from) || !t.Before(to) {
			return 0, false
		}
		return int(t.Sub(from) / step), true
	}
	for _, s := range samples {
		if i, ok := index(s.At); ok {
			accs[i].add(s)
		}
	}
	for _, iv := range ivs {
		if iv.Ready.IsZero() || iv.Ready.Before(iv.Start) {
			continue
		}
		if i, ok := index(iv.Ready); ok {
			accs[i].coldStart(iv.Ready.Sub(iv.Start).Seconds())
		}
	}
	out := make([]Point, n)
	for i := range accs {
		out[i] = accs[i].point(from.Add(time.Duration(i) * step).UTC())
	}
	return out
}

// stepAcc accumulates one step's samples and cold starts.
type stepAcc struct {
	n                                   int
	running, starting, pending, drain   float64
	held, inFlight, heldMax, inFlightMx float64
	span                                float64
	requests, tokens                    int64
	ttft                                Histogram
	colds                               int
	coldMax                             float64
}

func (a *stepAcc) add(s Sample) {
	a.n++
	a.running += float64(s.Running)
	a.starting += float64(s.Starting)
	a.pending += float64(s.Pending)
	a.drain += float64(s.Draining)
	a.held += float64(s.Held)
	a.inFlight += float64(s.InFlight)
	a.heldMax = max(a.heldMax, float64(s.Held))
	a.inFlightMx = max(a.inFlightMx, float64(s.InFlight))
	a.span += s.Span
	a.requests += s.Requests
	a.tokens += s.CompletionTokens
	if s.TTFT != nil {
		a.ttft = a.ttft.Add(*s.TTFT)
	}
}

func (a *stepAcc) coldStart(seconds float64) {
	a.colds++
	a.coldMax = max(a.coldMax, seconds)
}

// point is the step's Point: nil fields where it had no data.
func (a *stepAcc) point(at time.Time) Point {
	p := Point{At: at}
	if a.colds > 0 {
		p.ColdStarts, p.ColdStartSeconds = &a.colds, round3(a.coldMax)
	}
	if a.n == 0 {
		return p
	}
	if a.colds == 0 {
		p.ColdStarts = new(int)
	}
	avg := func(sum float64) *float64 { return round3(sum / float64(a.n)) }
	p.Running, p.Starting, p.Pending, p.Draining = avg(a.running), avg(a.starting), avg(a.pending), avg(a.drain)
	p.Held, p.InFlight = avg(a.held), avg(a.inFlight)
	p.HeldMax, p.InFlightMax = round3(a.heldMax), round3(a.inFlightMx)
	if a.span > 0 {
		p.RequestsPerSecond = round3(float64(a.requests) / a.span)
		p.TokensPerSecond = round3(float64(a.tokens) / a.span)
	}
	if v, ok := a.ttft.Quantile(0.5); ok {
		p.TTFTP50ms = round3(v * 1000)
	}
	if v, ok := a.ttft.Quantile(0.99); ok {
		p.TTFTP99ms = round3(v * 1000)
	}
	return p
}

// round3 returns v rounded to 3 decimals, as a pointer for a Point.
func round3(v float64) *float64 {
	r := math.Round(v*1000) / 1000
	return &r
}
