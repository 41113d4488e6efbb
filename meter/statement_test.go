package meter

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestWeekStart(t *testing.T) {
	paris := time.FixedZone("UTC+1", 3600)
	for _, tc := range []struct{ in, want time.Time }{
		{mon, mon},
		{at(0.001), mon},
		{at(7*24 - 0.001), mon},        // Sunday 23:59:56
		{at(7 * 24), at(7 * 24)},       // the next Monday
		{at(-1), at(-7 * 24)},          // Sunday before: the week before
		{at(0.5).In(paris), mon},       // Monday 01:30 in UTC+1 is Monday 00:30 UTC
		{at(-0.5).In(paris), at(-168)}, // Monday 00:30 in UTC+1 is still Sunday UTC
	} {
		if got := WeekStart(tc.in); !got.Equal(tc.want) || got.Location() != time.UTC {
			t.Errorf("WeekStart(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

// TestStatementsWeekBoundary: a run across Sunday to Monday midnight UTC is
// split between two statements; the earlier week is final, the current one
// not.
func TestStatementsWeekBoundary(t *testing.T) {
	ivs := []Interval{
		iv("i1", "d1", 2, 7*24-1, 7*24-0.5, 7*24+1.5),
		{InstanceID: "i2", DeployID: "d2", Model: "alice/d2", GPU: "H100-80GB", NumGPUs: 1, Start: at(7*24 + 2)}, // open
	}
	now := at(7*24 + 4)
	sts, err := Statements(ivs, at(0), now, now, testPrices)
	if err != nil {
		t.Fatal(err)
	}
	want := []Statement{{
		Start: at(0), End: at(7 * 24), Final: true,
		Lines:    []Line{{DeployID: "d1", Model: "alice/d1", GPU: "A100-80GB", GPUHours: 2, RateUSD: 2, AmountUSD: 4}},
		TotalUSD: 4,
	}, {
		Start: at(7 * 24), End: at(14 * 24), Final: false,
		Lines: []Line{
			{DeployID: "d1", Model: "alice/d1", GPU: "A100-80GB", GPUHours: 3, RateUSD: 2, AmountUSD: 6},
			{DeployID: "d2", Model: "alice/d2", GPU: "H100-80GB", GPUHours: 2, RateUSD: 3, AmountUSD: 6},
		},
		TotalUSD: 12,
	}}
	if d := cmp.Diff(want, sts); d != "" {
		t.Errorf("statements (-want +got):\n%s", d)
	}
	// Weeks with no GPU time have no statement.
	sts, err = Statements(ivs, at(-21*24), at(-1), now, testPrices)
	if err != nil || len(sts) != 0 {
		t.Errorf("weeks before any run: %d statements, err %v; want none", len(sts), err)
	}
	if _, err := Statements([]Interval{{DeployID: "d", GPU: "X", NumGPUs: 1, Start: at(1), End: at(2)}}, at(0), at(3), at(3), testPrices); !errors.Is(err, ErrUnknownGPU) {
		t.Errorf("an unpriced GPU: err = %v, want ErrUnknownGPU", err)
	}
}

// TestStatementTotalMatchesLedger: over many odd-length runs, a week's
// total is the sum of its rounded lines, and it differs from the ledger's
// exact cost (Summarize over the same week) by at most a cent per line.
func TestStatementTotalMatchesLedger(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	prices := Prices{"A100-80GB": 1.37, "H100-80GB": 2.41, "L4-24GB": 0.433}
	gpus := []string{"A100-80GB", "H100-80GB", "L4-24GB"}
	var ivs []Interval
	for i := range 300 {
		start := at(rng.Float64() * 21 * 24)
		d := time.Duration(rng.Int64N(int64(30 * time.Hour)))
		ivs = append(ivs, Interval{
			InstanceID: "i" + string(rune('a'+i%26)) + time.Duration(i).String(),
			DeployID:   "d" + string(rune('a'+i%17)), GPU: gpus[i%3], NumGPUs: 1 + i%4,
			Start: start, End: start.Add(d),
		})
	}
	now := at(21 * 24)
	sts, err := Statements(ivs, at(0), now, now, prices)
	if err != nil {
		t.Fatal(err)
	}
	if len(sts) != 3 {
		t.Fatalf("%d statements, want 3", len(sts))
	}
	for _, st := range sts {
		var sum float64
		for _, l := range st.Lines {
			if l.AmountUSD != math.Round(l.AmountUSD*100)/100 {
				t.Errorf("line %+v: amount not in cents", l)
			}
			sum += l.AmountUSD
		}
		if math.Abs(sum-st.TotalUSD) > 1e-9 {
			t.Errorf("week of %s: total %v, sum of lines %v", st.Start, st.TotalUSD, sum)
		}
		r, err := Summarize(ivs, nil, st.Start, st.End, now, GroupDeployment, prices)
		if err != nil {
			t.Fatal(err)
		}
		if diff := math.Abs(st.TotalUSD - r.Total.CostUSD); diff > 0.01*float64(len(st.Lines)) {
			t.Errorf("week of %s: statement %v, ledger %v: off by %v over %d lines", st.Start, st.TotalUSD, r.Total.CostUSD, diff, len(st.Lines))
		}
		var hours float64
		for _, l := range st.Lines {
			hours += l.GPUHours
		}
		if math.Abs(hours*3600-r.Total.GPUSeconds) > 1e-6 {
			t.Errorf("week of %s: %v GPU-hours on the statement, %v GPU-seconds in the ledger", st.Start, hours, r.Total.GPUSeconds)
		}
	}
}

func TestWriteCSV(t *testing.T) {
	sts := []Statement{{
		Start: at(0), End: at(7 * 24), Final: true,
		Lines: []Line{
			{DeployID: "d1", Model: "alice/m,1", GPU: "A100-80GB", GPUHours: 1.5, RateUSD: 1.5, AmountUSD: 2.25},
			{DeployID: "d2", Model: "alice/m2", GPU: "H100-80GB", GPUHours: 1.0 / 3, RateUSD: 2.4, AmountUSD: 0.8},
		},
		TotalUSD: 3.05,
	}, {
		Start: at(7 * 24), End: at(14 * 24),
		Lines:    []Line{{DeployID: "d1", Model: "alice/m,1", GPU: "A100-80GB", GPUHours: 10, RateUSD: 1.5, AmountUSD: 15}},
		TotalUSD: 15,
	}}
	var b bytes.Buffer
	if err := WriteCSV(&b, sts); err != nil {
		t.Fatal(err)
	}
	want := `week_start,week_end,final,deploy_id,model,gpu,gpu_hours,rate_usd,amount_usd
2026-03-02,2026-03-09,true,d1,"alice/m,1",A100-80GB,1.500000,1.5,2.25
2026-03-02,2026-03-09,true,d2,alice/m2,H100-80GB,0.333333,2.4,0.80
2026-03-09,2026-03-16,false,d1,"alice/m,1",A100-80GB,10.000000,1.5,15.00
`
	if d := cmp.Diff(want, b.String()); d != "" {
		t.Errorf("CSV (-want +got):\n%s", d)
	}
}
