package meter

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// mon is Monday 2 March 2026, 00:00 UTC; at(h) is h hours after it.
var mon = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)

func at(h float64) time.Time { return mon.Add(time.Duration(h * float64(time.Hour))) }

var testPrices = Prices{"A100-80GB": 2, "H100-80GB": 3}

// iv is an interval of deployment d on A100s, from start to end (hours
// after mon; end < 0 is still open) with ready at ready (< 0: never).
func iv(id, d string, n int, start, ready, end float64) Interval {
	v := Interval{InstanceID: id, DeployID: d, Owner: "alice", Model: "alice/" + d, GPU: "A100-80GB", NumGPUs: n, Start: at(start)}
	if ready >= 0 {
		v.Ready = at(ready)
	}
	if end >= 0 {
		v.End, v.EndReason = at(end), "stopped"
	}
	return v
}

func ptr(t time.Time) *time.Time { return &t }

func TestSummarize(t *testing.T) {
	for _, tc := range []struct {
		name          string
		ivs           []Interval
		tokens        []Tokens
		from, to, now time.Time
		by            GroupBy
		want          []Item
		wantTotal     Item
	}{{
		name: "clipped at both window edges",
		ivs:  []Interval{iv("i1", "d1", 1, 10, 10, 14)},
		from: at(11), to: at(13), now: at(20),
		want:      []Item{{DeployID: "d1", Model: "alice/d1", GPU: "A100-80GB", NumGPUs: 1, GPUSeconds: 7200, CostUSD: 4}},
		wantTotal: Item{GPUSeconds: 7200, CostUSD: 4},
	}, {
		name: "an open interval counts up to now",
		ivs:  []Interval{iv("i1", "d1", 2, 10, 10.5, -1)},
		from: at(0), to: at(24), now: at(12.5),
		want:      []Item{{DeployID: "d1", Model: "alice/d1", GPU: "A100-80GB", NumGPUs: 2, GPUSeconds: 2 * 9000, LoadingSeconds: 2 * 1800, CostUSD: 10}},
		wantTotal: Item{GPUSeconds: 18000, LoadingSeconds: 3600, CostUSD: 10},
	}, {
		name: "an open interval past the window stops at to",
		ivs:  []Interval{iv("i1", "d1", 1, 10, 10, -1)},
		from: at(0), to: at(11), now: at(15),
		want:      []Item{{DeployID: "d1", Model: "alice/d1", GPU: "A100-80GB", NumGPUs: 1, GPUSeconds: 3600, CostUSD: 2}},
		wantTotal: Item{GPUSeconds: 3600, CostUSD: 2},
	}, {
		name: "overlapping instances of one deployment are summed",
		ivs:  []Interval{iv("i1", "d1", 2, 10, 10.25, 12), iv("i2", "d1", 2, 11, -1, 13)},
		from: at(0), to: at(24), now: at(24),
		want: []Item{{DeployID: "d1", Model: "alice/d1", GPU: "A100-80GB", NumGPUs: 2,
			GPUSeconds: 4 * 7200, LoadingSeconds: 2*900 + 2*7200, NeverReadySeconds: 2 * 7200, CostUSD: 16}},
		wantTotal: Item{GPUSeconds: 28800, LoadingSeconds: 16200, NeverReadySeconds: 14400, CostUSD: 16},
	}, {
		name: "loading before the window is not counted in it",
		ivs:  []Interval{iv("i1", "d1", 1, 10, 11, 12)},
		from: at(10.5), to: at(24), now: at(24),
		want:      []Item{{DeployID: "d1", Model: "alice/d1", GPU: "A100-80GB", NumGPUs: 1, GPUSeconds: 5400, LoadingSeconds: 1800, CostUSD: 3}},
		wantTotal: Item{GPUSeconds: 5400, LoadingSeconds: 1800, CostUSD: 3},
	}, {
		name: "intervals outside the window are left out",
		ivs:  []Interval{iv("i1", "d1", 1, 1, 1, 2), iv("i2", "d2", 1, 30, 30, 31)},
		from: at(5), to: at(24), now: at(40),
		want:      []Item{},
		wantTotal: Item{},
	}, {
		name: "per GPU type",
		ivs: []Interval{iv("i1", "d1", 1, 0, 0, 1), iv("i2", "d2", 1, 0, 0, 2),
			{InstanceID: "i3", DeployID: "d3", GPU: "H100-80GB", NumGPUs: 1, Start: at(0), End: at(1)}},
		tokens: []Tokens{{DeployID: "d2", Hour: at(1), Requests: 3}, {DeployID: "d3", Hour: at(0), Requests: 5}},
		from:   at(0), to: at(24), now: at(24), by: GroupGPU,
		want: []Item{
			{GPU: "A100-80GB", GPUSeconds: 3 * 3600, LoadingSeconds: 0, CostUSD: 6, Requests: 3},
			{GPU: "H100-80GB", GPUSeconds: 3600, LoadingSeconds: 3600, NeverReadySeconds: 3600, CostUSD: 3, Requests: 5}, // never ready: all loading, and ended so
		},
		wantTotal: Item{GPUSeconds: 4 * 3600, LoadingSeconds: 3600, NeverReadySeconds: 3600, CostUSD: 9, Requests: 8},
	}, {
		name: "per day: a run across midnight is split",
		ivs:  []Interval{iv("i1", "d1", 1, 22, 22, 26)},
		from: at(0), to: at(48), now: at(48), by: GroupDay,
		want: []Item{
			{Start: ptr(at(0)), GPUSeconds: 7200, CostUSD: 4},
			{Start: ptr(at(24)), GPUSeconds: 7200, CostUSD: 4},
		},
		wantTotal: Item{GPUSeconds: 14400, CostUSD: 8},
	}, {
		name: "per week: a run across Sunday to Monday midnight is split",
		ivs:  []Interval{iv("i1", "d1", 2, 7*24-1, 7*24-1, 7*24+1)},
		from: at(0), to: at(14 * 24), now: at(14 * 24), by: GroupWeek,
		tokens: []Tokens{
			{DeployID: "d1", Hour: at(7*24 - 1), Requests: 1, PromptTokens: 10, CompletionTokens: 20},
			{DeployID: "d1", Hour: at(7 * 24), Requests: 2, PromptTokens: 30, CompletionTokens: 40},
		},
		want: []Item{
			{Start: ptr(at(0)), GPUSeconds: 7200, CostUSD: 4, Requests: 1, PromptTokens: 10, CompletionTokens: 20},
			{Start: ptr(at(7 * 24)), GPUSeconds: 7200, CostUSD: 4, Requests: 2, PromptTokens: 30, CompletionTokens: 40},
		},
		wantTotal: Item{GPUSeconds: 14400, CostUSD: 8, Requests: 3, PromptTokens: 40, CompletionTokens: 60},
	}, {
		name: "tokens by deployment, hours outside the window left out",
		ivs:  []Interval{iv("i1", "d1", 1, 10, 10, 12)},
		tokens: []Tokens{
			{DeployID: "d1", Hour: at(9), Requests: 100},
			{DeployID: "d1", Hour: at(10), Requests: 1, PromptTokens: 2, CompletionTokens: 3},
			{DeployID: "d1", Hour: at(11), Requests: 4, PromptTokens: 5, CompletionTokens: 6},
			{DeployID: "d1", Hour: at(12), Requests: 100},
		},
		from: at(10), to: at(12), now: at(24),
		want: []Item{{DeployID: "d1", Model: "alice/d1", GPU: "A100-80GB", NumGPUs: 1, GPUSeconds: 7200, CostUSD: 4,
			Requests: 5, PromptTokens: 7, CompletionTokens: 9}},
		wantTotal: Item{GPUSeconds: 7200, CostUSD: 4, Requests: 5, PromptTokens: 7, CompletionTokens: 9},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Summarize(tc.ivs, tc.tokens, tc.from, tc.to, tc.now, tc.by, testPrices)
			if err != nil {
				t.Fatal(err)
			}
			want := Report{From: tc.from, To: tc.to, Items: tc.want, Total: tc.wantTotal}
			if d := cmp.Diff(want, r); d != "" {
				t.Errorf("report (-want +got):\n%s", d)
			}
		})
	}
}

// TestSummarizeMonths: a run across a month's end is split between the two
// months' reports, and the two add up to the whole run.
func TestSummarizeMonths(t *testing.T) {
	feb, mar, apr := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)
	run := []Interval{{InstanceID: "i1", DeployID: "d1", GPU: "H100-80GB", NumGPUs: 2,
		Start: mar.Add(-90 * time.Minute), Ready: mar.Add(-80 * time.Minute), End: mar.Add(30 * time.Minute)}}
	now := apr
	febR, err := Summarize(run, nil, feb, mar, now, "", testPrices)
	if err != nil {
		t.Fatal(err)
	}
	marR, err := Summarize(run, nil, mar, apr, now, "", testPrices)
	if err != nil {
		t.Fatal(err)
	}
	if febR.Total.GPUSeconds != 2*5400 || marR.Total.GPUSeconds != 2*1800 {
		t.Errorf("GPU-seconds February %v, March %v; want %v and %v", febR.Total.GPUSeconds, marR.Total.GPUSeconds, 2*5400, 2*1800)
	}
	if febR.Total.CostUSD != 9 || marR.Total.CostUSD != 3 {
		t.Errorf("cost February %v, March %v; want 9 and 3 (2 H100 x 1.5 h and x 0.5 h at 3 USD)", febR.Total.CostUSD, marR.Total.CostUSD)
	}
	if febR.Total.LoadingSeconds != 2*600 || marR.Total.LoadingSeconds != 0 {
		t.Errorf("loading February %v, March %v; want 1200 and 0", febR.Total.LoadingSeconds, marR.Total.LoadingSeconds)
	}
}

func TestSummarizeErrors(t *testing.T) {
	unknown := Interval{InstanceID: "i1", DeployID: "d1", GPU: "T4-16GB", NumGPUs: 1, Start: at(1), End: at(2)}
	_, err := Summarize([]Interval{unknown}, nil, at(0), at(3), at(3), "", testPrices)
	if !errors.Is(err, ErrUnknownGPU) {
		t.Errorf("an unpriced GPU in the window: err = %v, want ErrUnknownGPU", err)
	}
	if _, err := Summarize([]Interval{unknown}, nil, at(5), at(6), at(6), "", testPrices); err != nil {
		t.Errorf("an unpriced GPU outside the window: %v", err)
	}
	if _, err := Summarize(nil, nil, at(0), at(1), at(1), "month", testPrices); err == nil {
		t.Error("group_by month: no error")
	}
	if _, err := Summarize(nil, nil, at(1), at(1), at(1), "", testPrices); err == nil {
		t.Error("an empty window: no error")
	}
}
