package autoscaler

import (
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

// step is one observation at t0+at and the decision it must produce.
type step struct {
	at      time.Duration
	current int
	demand  int
	woken   bool
	spec    *Spec // nil: the case's spec
	want    Decision
}

// decideCase is a config and a spec stepped through time from a zero State.
type decideCase struct {
	name  string
	cfg   Config
	spec  Spec
	steps []step
}

// runDecide runs each case's steps in order, feeding each Decide the State
// the one before returned.
func runDecide(t *testing.T, tests []decideCase) {
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var st State
			for i, s := range tt.steps {
				spec := tt.spec
				if s.spec != nil {
					spec = *s.spec
				}
				var got Decision
				got, st = Decide(tt.cfg, st, Input{Now: t0.Add(s.at), Spec: spec, Current: s.current, Demand: s.demand, Woken: s.woken})
				if diff := cmp.Diff(s.want, got); diff != "" {
					t.Fatalf("step %d (t0+%v): Decide() mismatch (-want +got):\n%s", i, s.at, diff)
				}
			}
		})
	}
}

func TestDecide(t *testing.T) {
	batch8 := Spec{Min: 0, Max: 10, BatchSize: 8}
	runDecide(t, []decideCase{{
		name: "first request scales from zero in the same call",
		spec: batch8,
		steps: []step{
			{at: 0, current: 0, demand: 0, want: Decision{0, "idle 5m0s: scale to min 0"}},
			{at: 1 * time.Second, current: 0, demand: 1, want: Decision{1, "wake: 1 request needs 1 x 8"}},
		},
	}, {
		name: "an idle timeout shorter than the stable window still scales to zero on time",
		cfg:  Config{IdleTimeout: 2 * time.Second},
		spec: batch8,
		steps: []step{
			{at: 0, current: 0, demand: 3, want: Decision{1, "wake: 3 requests need 1 x 8"}},
			{at: 1 * time.Second, current: 1, demand: 0, want: Decision{1, "stable: max 3 requests need 1 x 8 over 1m0s"}},
			{at: 3 * time.Second, current: 1, demand: 0, want: Decision{0, "idle 2s: scale to min 0"}},
		},
	}, {
		name: "woken before the demand source counted the request",
		spec: batch8,
		steps: []step{
			{at: 0, current: 0, demand: 0, woken: true, want: Decision{1, "wake: 1 request needs 1 x 8"}},
			// Woken again while the instance is pending: no second instance.
			{at: 100 * time.Millisecond, current: 1, demand: 0, woken: true, want: Decision{1, "stable: max 1 request needs 1 x 8 over 1m0s"}},
		},
	}, {
		name: "burst from zero asks for its full need at once",
		spec: batch8,
		steps: []step{
			{at: 0, current: 0, demand: 40, want: Decision{5, "wake: 40 requests need 5 x 8"}},
		},
	}, {
		name: "pending instances count: repeated calls during a burst do not staircase",
		spec: batch8,
		steps: []step{
			{at: 0, current: 1, demand: 20, want: Decision{3, "burst: 20 requests need 3 x 8"}},
			// 1 running + 2 pending: the same burst asks for nothing more.
			{at: 1 * time.Second, current: 3, demand: 20, want: Decision{3, "stable: max 20 requests need 3 x 8 over 1m0s"}},
			{at: 2 * time.Second, current: 3, demand: 24, want: Decision{3, "stable: max 24 requests need 3 x 8 over 1m0s"}},
			{at: 3 * time.Second, current: 3, demand: 25, want: Decision{4, "burst: 25 requests need 4 x 8"}},
			{at: 4 * time.Second, current: 4, demand: 25, want: Decision{4, "stable: max 25 requests need 4 x 8 over 1m0s"}},
		},
	}, {
		name: "growth below the panic threshold scales up as demand",
		spec: batch8,
		steps: []step{
			{at: 0, current: 2, demand: 16, want: Decision{2, "stable: max 16 requests need 2 x 8 over 1m0s"}},
			{at: 1 * time.Second, current: 2, demand: 17, want: Decision{3, "demand: 17 requests need 3 x 8"}},
		},
	}, {
		name: "scale-down waits for the stable window, then falls to its max",
		spec: batch8,
		steps: []step{
			{at: 0, current: 0, demand: 40, want: Decision{5, "wake: 40 requests need 5 x 8"}},
			{at: 10 * time.Second, current: 5, demand: 40, want: Decision{5, "stable: max 40 requests need 5 x 8 over 1m0s"}},
			{at: 11 * time.Second, current: 5, demand: 8, want: Decision{5, "stable: max 40 requests need 5 x 8 over 1m0s"}},
			// The 40 was in effect until 11s: still inside [10s, 70s].
			{at: 70 * time.Second, current: 5, demand: 8, want: Decision{5, "stable: max 40 requests need 5 x 8 over 1m0s"}},
			{at: 71 * time.Second, current: 5, demand: 8, want: Decision{1, "stable: max 8 requests need 1 x 8 over 1m0s"}},
		},
	}, {
		name: "scale-down waits for ScaleDownDelay after the last change",
		cfg:  Config{ScaleDownDelay: 2 * time.Minute},
		spec: batch8,
		steps: []step{
			{at: 0, current: 0, demand: 8, want: Decision{1, "wake: 8 requests need 1 x 8"}},
			{at: 50 * time.Second, current: 1, demand: 9, want: Decision{2, "demand: 9 requests need 2 x 8"}},
			{at: 51 * time.Second, current: 2, demand: 0, want: Decision{2, "stable: max 9 requests need 2 x 8 over 1m0s"}},
			{at: 111 * time.Second, current: 2, demand: 0, want: Decision{2, "hold 2: scale-down to 1 in 59s (scale-down delay 2m0s)"}},
			{at: 170 * time.Second, current: 2, demand: 0, want: Decision{1, "no requests for 1m59s: keep 1 until idle 5m0s"}},
		},
	}, {
		name: "a scale-up is never delayed by ScaleDownDelay",
		cfg:  Config{ScaleDownDelay: 10 * time.Minute},
		spec: batch8,
		steps: []step{
			{at: 0, current: 0, demand: 1, want: Decision{1, "wake: 1 request needs 1 x 8"}},
			{at: 1 * time.Second, current: 1, demand: 9, want: Decision{2, "demand: 9 requests need 2 x 8"}},
			{at: 2 * time.Second, current: 2, demand: 17, want: Decision{3, "demand: 17 requests need 3 x 8"}},
		},
	}, {
		name: "panic: no scale-down while current capacity is overwhelmed",
		spec: batch8,
		steps: []step{
			{at: 0, current: 0, demand: 40, want: Decision{5, "wake: 40 requests need 5 x 8"}},
			// Instances were lost and not yet replaced: 17 requests at 1
			// instance is over 2x its capacity.
			{at: 30 * time.Second, current: 1, demand: 17, want: Decision{5, "stable: max 40 requests need 5 x 8 over 1m0s"}},
			{at: 91 * time.Second, current: 1, demand: 17, want: Decision{5, "burst: hold 5; scale-down to 3 waits for 1m0s without a burst"}},
			// Capacity back: panic ends a stable window after the last burst.
			{at: 92 * time.Second, current: 5, demand: 17, want: Decision{5, "burst: hold 5; scale-down to 3 waits for 1m0s without a burst"}},
			{at: 151 * time.Second, current: 5, demand: 17, want: Decision{3, "stable: max 17 requests need 3 x 8 over 1m0s"}},
		},
	}, {
		name: "keeps one instance while demand was seen within IdleTimeout, then min",
		spec: batch8,
		steps: []step{
			{at: 0, current: 0, demand: 3, want: Decision{1, "wake: 3 requests need 1 x 8"}},
			{at: 1 * time.Second, current: 1, demand: 0, want: Decision{1, "stable: max 3 requests need 1 x 8 over 1m0s"}},
			{at: 61 * time.Second, current: 1, demand: 0, want: Decision{1, "no requests for 1m0s: keep 1 until idle 5m0s"}},
			{at: 300 * time.Second, current: 1, demand: 0, want: Decision{1, "no requests for 4m59s: keep 1 until idle 5m0s"}},
			{at: 301 * time.Second, current: 1, demand: 0, want: Decision{0, "idle 5m0s: scale to min 0"}},
		},
	}, {
		name: "a request within IdleTimeout restarts it",
		spec: batch8,
		steps: []step{
			{at: 0, current: 0, demand: 1, want: Decision{1, "wake: 1 request needs 1 x 8"}},
			{at: 1 * time.Second, current: 1, demand: 0, want: Decision{1, "stable: max 1 request needs 1 x 8 over 1m0s"}},
			{at: 200 * time.Second, current: 1, demand: 2, want: Decision{1, "stable: max 2 requests need 1 x 8 over 1m0s"}},
			{at: 201 * time.Second, current: 1, demand: 0, want: Decision{1, "stable: max 2 requests need 1 x 8 over 1m0s"}},
			{at: 301 * time.Second, current: 1, demand: 0, want: Decision{1, "no requests for 1m40s: keep 1 until idle 5m0s"}},
			{at: 501 * time.Second, current: 1, demand: 0, want: Decision{0, "idle 5m0s: scale to min 0"}},
		},
	}, {
		name: "min_instances is kept with no demand at all",
		spec: Spec{Min: 2, Max: 10, BatchSize: 8},
		steps: []step{
			{at: 0, current: 0, demand: 0, want: Decision{2, "idle 5m0s: scale to min 2"}},
			{at: 10 * time.Minute, current: 2, demand: 0, want: Decision{2, "idle 5m0s: scale to min 2"}},
		},
	}, {
		name: "scale-down after a burst stops at min_instances",
		spec: Spec{Min: 2, Max: 10, BatchSize: 8},
		steps: []step{
			{at: 0, current: 2, demand: 40, want: Decision{5, "burst: 40 requests need 5 x 8"}},
			{at: 1 * time.Second, current: 5, demand: 0, want: Decision{5, "stable: max 40 requests need 5 x 8 over 1m0s"}},
			{at: 2 * time.Minute, current: 5, demand: 0, want: Decision{2, "no requests for 1m59s: keep 1 until idle 5m0s; min_instances keeps 2"}},
			{at: 10 * time.Minute, current: 2, demand: 0, want: Decision{2, "idle 5m0s: scale to min 2"}},
		},
	}, {
		name: "max_instances caps a burst",
		spec: Spec{Min: 0, Max: 3, BatchSize: 8},
		steps: []step{
			{at: 0, current: 0, demand: 40, want: Decision{3, "wake: 40 requests need 5 x 8; max_instances limits it to 3"}},
			{at: 1 * time.Second, current: 3, demand: 40, want: Decision{3, "burst: 40 requests need 5 x 8; max_instances limits it to 3"}},
		},
	}, {
		name: "lowering max_instances applies at once, delay or not",
		spec: batch8,
		steps: []step{
			{at: 0, current: 0, demand: 40, want: Decision{5, "wake: 40 requests need 5 x 8"}},
			{at: 1 * time.Second, current: 5, demand: 40, spec: &Spec{Min: 0, Max: 2, BatchSize: 8},
				want: Decision{2, "stable: max 40 requests need 5 x 8 over 1m0s; max_instances limits it to 2"}},
		},
	}, {
		name: "max below min reads as min",
		spec: Spec{Min: 2, Max: 1, BatchSize: 8},
		steps: []step{
			{at: 0, current: 0, demand: 40, want: Decision{2, "wake: 40 requests need 5 x 8; max_instances limits it to 2"}},
		},
	}, {
		name: "TargetUtilization counts a fraction of the batch",
		cfg:  Config{TargetUtilization: 0.7},
		spec: Spec{Min: 0, Max: 10, BatchSize: 8},
		steps: []step{
			{at: 0, current: 0, demand: 12, want: Decision{3, "wake: 12 requests need 3 x 5.6"}},
		},
	}, {
		name: "restart with no history: no scale-down before a full stable window",
		spec: batch8,
		steps: []step{
			{at: 0, current: 3, demand: 0, want: Decision{3, "hold 3: scale-down to 1 waits for 1m0s of demand history"}},
			{at: 59 * time.Second, current: 3, demand: 0, want: Decision{3, "hold 3: scale-down to 1 waits for 1m0s of demand history"}},
			{at: 60 * time.Second, current: 3, demand: 0, want: Decision{1, "no requests for 1m0s: keep 1 until idle 5m0s"}},
			{at: 5 * time.Minute, current: 1, demand: 0, want: Decision{0, "idle 5m0s: scale to min 0"}},
		},
	}, {
		name: "a gap in samples carries the last demand forward",
		spec: batch8,
		steps: []step{
			{at: 0, current: 0, demand: 20, want: Decision{3, "wake: 20 requests need 3 x 8"}},
			// Nothing observed for 10 minutes (demand source down); the
			// first sample after is 0. The 20 held until now: not idle.
			{at: 10 * time.Minute, current: 3, demand: 0, want: Decision{3, "stable: max 20 requests need 3 x 8 over 1m0s"}},
			{at: 11 * time.Minute, current: 3, demand: 0, want: Decision{1, "no requests for 1m0s: keep 1 until idle 5m0s"}},
		},
	}})
}

// TestDecidePure checks that Decide never writes through the State it was
// given: deciding twice from the same state gives the same answer.
func TestDecidePure(t *testing.T) {
	spec := Spec{Max: 10, BatchSize: 8}
	var st State
	for i := range 20 {
		_, st = Decide(Config{}, st, Input{Now: t0.Add(time.Duration(i) * time.Second), Spec: spec, Current: 2, Demand: 12})
	}
	in := Input{Now: t0.Add(20 * time.Second), Spec: spec, Current: 2, Demand: 12}
	first, _ := Decide(Config{}, st, in)
	_, _ = Decide(Config{}, st, Input{Now: t0.Add(20 * time.Second), Spec: spec, Current: 2, Demand: 400})
	again, _ := Decide(Config{}, st, in)
	if diff := cmp.Diff(first, again); diff != "" {
		t.Errorf("second Decide from the same state differs (-first +again):\n%s", diff)
	}
}

func TestPanicking(t *testing.T) {
	spec := Spec{Max: 10, BatchSize: 8}
	_, st := Decide(Config{}, State{}, Input{Now: t0, Spec: spec, Current: 1, Demand: 16})
	if !st.Panicking() {
		t.Errorf("16 requests at 1 x 8: Panicking() = false, want true")
	}
	_, st = Decide(Config{}, st, Input{Now: t0.Add(time.Minute), Spec: spec, Current: 2, Demand: 8})
	if st.Panicking() {
		t.Errorf("a stable window after the burst: Panicking() = true, want false")
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"zero is defaults", Config{}, true},
		{"negative window", Config{StableWindow: -time.Second}, false},
		{"panic window longer than stable", Config{StableWindow: 5 * time.Second, PanicWindow: 10 * time.Second}, false},
		{"negative utilization", Config{TargetUtilization: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.validate(); (err == nil) != tt.ok {
				t.Errorf("validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

// quiet is one observation per second in [from, to] with no demand, each
// expecting want: a tick-by-tick silence.
func quiet(from, to time.Duration, current int, want Decision) []step {
	var out []step
	for at := from; at <= to; at += time.Second {
		out = append(out, step{at: at, current: current, want: want})
	}
	return out
}

// TestDecideIdleForgetsGoneDemand steps second by second through the scale
// to zero (or min) of an idle deployment whose IdleTimeout is shorter than
// the panic (6s) or stable (60s) window. The demand that was seen before the
// scale-down is gone: nothing may scale back up on it for a whole stable
// window, and a request that arrives after it must still wake at once.
func TestDecideIdleForgetsGoneDemand(t *testing.T) {
	batch8 := Spec{Min: 0, Max: 10, BatchSize: 8}
	idle3 := Decision{0, "idle 3s: scale to min 0"}
	idle30 := Decision{0, "idle 30s: scale to min 0"}
	// oneRequest is one request that wakes the deployment at 0, is
	// served from 1s to 2s and ends: the last demand is seen at 2s.
	oneRequest := []step{
		{at: 0, current: 0, demand: 1, woken: true, want: Decision{1, "wake: 1 request needs 1 x 8"}},
		{at: 1 * time.Second, current: 1, demand: 1, want: Decision{1, "stable: max 1 request needs 1 x 8 over 1m0s"}},
	}
	runDecide(t, []decideCase{{
		name: "idle timeout shorter than the panic window: no phantom wake",
		cfg:  Config{IdleTimeout: 3 * time.Second},
		spec: batch8,
		steps: slices.Concat(oneRequest,
			quiet(2*time.Second, 4*time.Second, 1, Decision{1, "stable: max 1 request needs 1 x 8 over 1m0s"}),
			// 3s after the last demand (2s).
			[]step{{at: 5 * time.Second, current: 1, want: idle3}},
			// The panic window (until 8s) and the stable window (until
			// 62s) still span the request: it is gone all the same.
			quiet(6*time.Second, 5*time.Second+DefaultStableWindow+time.Second, 0, idle3),
		),
	}, {
		name: "idle timeout shorter than the panic window: a new request wakes at once",
		cfg:  Config{IdleTimeout: 3 * time.Second},
		spec: batch8,
		steps: slices.Concat(oneRequest,
			quiet(2*time.Second, 4*time.Second, 1, Decision{1, "stable: max 1 request needs 1 x 8 over 1m0s"}),
			[]step{
				{at: 5 * time.Second, current: 1, want: idle3},
				{at: 6 * time.Second, current: 0, want: idle3},
				// Woken before the demand source counted it.
				{at: 6500 * time.Millisecond, current: 0, woken: true, want: Decision{1, "wake: 1 request needs 1 x 8"}},
				{at: 7 * time.Second, current: 1, demand: 1, want: Decision{1, "stable: max 1 request needs 1 x 8 over 1m0s"}},
				{at: 8 * time.Second, current: 1, want: Decision{1, "stable: max 1 request needs 1 x 8 over 1m0s"}},
				{at: 11 * time.Second, current: 1, want: idle3},
				{at: 12 * time.Second, current: 0, want: idle3},
				// Counted by the demand source, not woken.
				{at: 13 * time.Second, current: 0, demand: 9, want: Decision{2, "wake: 9 requests need 2 x 8"}},
			},
		),
	}, {
		name: "idle timeout between the panic and the stable window: no phantom wake",
		cfg:  Config{IdleTimeout: 30 * time.Second},
		spec: batch8,
		steps: slices.Concat(oneRequest,
			[]step{{at: 2 * time.Second, current: 1, want: Decision{1, "stable: max 1 request needs 1 x 8 over 1m0s"}}},
			quiet(3*time.Second, 31*time.Second, 1, Decision{1, "stable: max 1 request needs 1 x 8 over 1m0s"}),
			[]step{{at: 32 * time.Second, current: 1, want: idle30}},
			quiet(33*time.Second, 32*time.Second+DefaultStableWindow+time.Second, 0, idle30),
		),
	}, {
		name: "idle scale-down to min after a burst: no phantom scale-up from the panic window",
		cfg:  Config{IdleTimeout: 3 * time.Second},
		spec: Spec{Min: 1, Max: 10, BatchSize: 8},
		steps: slices.Concat(
			[]step{
				{at: 0, current: 1, demand: 20, want: Decision{3, "burst: 20 requests need 3 x 8"}},
				{at: 1 * time.Second, current: 3, want: Decision{3, "stable: max 20 requests need 3 x 8 over 1m0s"}},
			},
			quiet(2*time.Second, 3*time.Second, 3, Decision{3, "stable: max 20 requests need 3 x 8 over 1m0s"}),
			[]step{{at: 4 * time.Second, current: 3, want: Decision{1, "idle 3s: scale to min 1"}}},
			quiet(5*time.Second, 4*time.Second+DefaultStableWindow+time.Second, 1, Decision{1, "idle 3s: scale to min 1"}),
		),
	}, {
		name: "idle at max_instances: the panic window does not hold the instance past the idle timeout",
		cfg:  Config{IdleTimeout: 3 * time.Second},
		spec: Spec{Min: 0, Max: 1, BatchSize: 8},
		steps: slices.Concat(
			[]step{
				{at: 0, current: 0, demand: 20, want: Decision{1, "wake: 20 requests need 3 x 8; max_instances limits it to 1"}},
			},
			// 20 requests at the one instance allowed is a burst.
			quiet(1*time.Second, 3*time.Second, 1, Decision{1, "burst: 20 requests need 3 x 8; max_instances limits it to 1"}),
			[]step{{at: 4 * time.Second, current: 1, want: idle3}},
			quiet(5*time.Second, 4*time.Second+DefaultStableWindow+time.Second, 0, idle3),
		),
	}})
}
