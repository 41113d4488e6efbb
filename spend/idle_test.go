package spend

import (
	"strings"
	"testing"
	"time"

	"github.com/thawhq/thaw/meter"
)

func TestFindIdle(t *testing.T) {
	now := time.Date(2026, 11, 23, 7, 0, 0, 0, time.UTC) // Monday 07:00
	fri := time.Date(2026, 11, 20, 18, 0, 0, 0, time.UTC)
	p := meter.Prices{"A100-80GB": 2}
	ivs := []meter.Interval{
		// Forgotten: 2 GPUs since Friday 18:00, one request in the 18:00 hour.
		{InstanceID: "a", DeployID: "forgotten", Model: "u/big", Owner: "u", GPU: "A100-80GB", NumGPUs: 2, Start: fri},
		// Busy: requests every hour.
		{InstanceID: "b", DeployID: "busy", Model: "u/busy", Owner: "u", GPU: "A100-80GB", NumGPUs: 1, Start: fri},
		// Ended: not running, whatever its history.
		{InstanceID: "c", DeployID: "ended", Model: "u/gone", Owner: "u", GPU: "A100-80GB", NumGPUs: 1, Start: fri, End: fri.Add(time.Hour)},
		// Young: started 2 h ago, never called: not yet idle for 24 h.
		{InstanceID: "d", DeployID: "young", Model: "u/young", Owner: "u", GPU: "A100-80GB", NumGPUs: 1, Start: now.Add(-2 * time.Hour)},
	}
	toks := []meter.Tokens{
		{DeployID: "forgotten", Owner: "u", Hour: fri, Requests: 1},
		{DeployID: "busy", Owner: "u", Hour: now.Add(-time.Hour), Requests: 40},
		{DeployID: "forgotten", Owner: "u", Hour: fri.Add(5 * time.Hour), Requests: 0}, // scraped, no request
	}
	got, err := FindIdle(ivs, toks, now, 24*time.Hour, p)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].DeployID != "forgotten" {
		t.Fatalf("FindIdle = %+v, want only the forgotten deployment", got)
	}
	idle := got[0]
	// Idle since the end of the hour with its last request: Friday 19:00,
	// 60 h before Monday 07:00, at 2 GPUs x 2 USD: 240 USD.
	if want := fri.Add(time.Hour); !idle.Since.Equal(want) || idle.CostUSD != 240 {
		t.Errorf("idle since %v costing %v, want %v and 240 USD", idle.Since, idle.CostUSD, want)
	}
	if msg := idle.Message(now); !strings.Contains(msg, "running idle for 60h0m0s: 240.00 USD so far") {
		t.Errorf("message %q", msg)
	}
	for _, tt := range []struct {
		since time.Duration
		want  string
	}{{3500 * time.Millisecond, "running idle for 3s:"}, {200 * time.Millisecond, "running idle for 1s:"}, {90 * time.Second, "running idle for 1m0s:"}} {
		short := Idle{Model: "u/m", Since: now.Add(-tt.since)}
		if msg := short.Message(now); !strings.Contains(msg, tt.want) {
			t.Errorf("idle %v: message %q, want %q", tt.since, msg, tt.want)
		}
	}
	if _, err := FindIdle(ivs, toks, now, 24*time.Hour, meter.Prices{}); err == nil {
		t.Error("an unpriced GPU type: no error")
	}
}
