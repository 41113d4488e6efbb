package spend

import (
	"slices"
	"testing"
	"time"
)

func TestDecide(t *testing.T) {
	for _, tt := range []struct {
		name    string
		s       State
		notify  []int
		blocked bool
	}{
		{"no limit never blocks", State{SpentUSD: 1e6}, nil, false},
		{"under half", State{SpentUSD: 49.99, LimitUSD: 100}, nil, false},
		{"half exactly", State{SpentUSD: 50, LimitUSD: 100}, []int{50}, false},
		{"half, already told", State{SpentUSD: 60, LimitUSD: 100, Notified: 50}, nil, false},
		{"80 after 50", State{SpentUSD: 80, LimitUSD: 100, Notified: 50}, []int{80}, false},
		{"all at once", State{SpentUSD: 130, LimitUSD: 100}, []int{50, 80, 100}, true},
		{"limit reached", State{SpentUSD: 100, LimitUSD: 100, Notified: 80}, []int{100}, true},
		{"over, told: still blocked", State{SpentUSD: 120, LimitUSD: 100, Notified: 100}, nil, true},
		{"limit raised: unblocked, nothing to tell", State{SpentUSD: 120, LimitUSD: 1000, Notified: 100}, nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := Decide(tt.s)
			if !slices.Equal(d.Notify, tt.notify) || d.Blocked != tt.blocked {
				t.Errorf("Decide(%+v) = %+v, want notify %v blocked %v", tt.s, d, tt.notify, tt.blocked)
			}
		})
	}
}

func TestForecast(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	if got := Forecast(50, 100, 10, now); !got.Equal(now.Add(5 * time.Hour)) {
		t.Errorf("50 of 100 at 10/h: %v, want 5h later", got)
	}
	if got := Forecast(100, 100, 10, now); !got.Equal(now) {
		t.Errorf("reached: %v, want now", got)
	}
	if got := Forecast(50, 100, 0, now); !got.IsZero() {
		t.Errorf("nothing running: %v, want never", got)
	}
	if got := Forecast(50, 0, 10, now); !got.IsZero() {
		t.Errorf("no limit: %v, want never", got)
	}
}

func TestMonthStart(t *testing.T) {
	at := time.Date(2026, 12, 1, 0, 30, 0, 0, time.FixedZone("CET", 3600)) // Nov 30, 23:30 UTC
	if got, want := MonthStart(at), time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("MonthStart(%v) = %v, want %v (months are UTC)", at, got, want)
	}
}
