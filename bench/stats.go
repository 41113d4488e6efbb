package bench

import (
	"math"
	"sort"
	"time"
)

// Summary describes a sample of durations. Durations are in milliseconds so
// that they read well in JSON.
type Summary struct {
	N      int     `json:"n"`
	MinMs  float64 `json:"min_ms"`
	P50Ms  float64 `json:"p50_ms"`
	P90Ms  float64 `json:"p90_ms"`
	P99Ms  float64 `json:"p99_ms"`
	MaxMs  float64 `json:"max_ms"`
	MeanMs float64 `json:"mean_ms"`
}

// Summarize returns the summary of ds; ds is not modified. An empty sample
// gives the zero Summary.
func Summarize(ds []time.Duration) Summary {
	if len(ds) == 0 {
		return Summary{}
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return Summary{
		N:      len(s),
		MinMs:  Ms(s[0]),
		P50Ms:  Ms(Percentile(s, 50)),
		P90Ms:  Ms(Percentile(s, 90)),
		P99Ms:  Ms(Percentile(s, 99)),
		MaxMs:  Ms(s[len(s)-1]),
		MeanMs: Ms(sum / time.Duration(len(s))),
	}
}

// Percentile returns the p-th percentile (0 < p <= 100) of sorted by the
// nearest-rank method: the smallest value with at least p% of the sample at
// or below it. sorted must be in ascending order and not empty.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// Ms is d in milliseconds, rounded to microseconds.
func Ms(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Microsecond)) / 1000
}
