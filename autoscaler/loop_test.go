package autoscaler

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/internal/logtest"
	"github.com/thawhq/thaw/internal/runtest"
)

// call is one SetDesired the fake fleet saw, At after the test started.
type call struct {
	At     time.Duration
	ID     string
	N      int
	Reason string
	Failed bool
}

// fakeFleet records SetDesired calls. With apply set, a call updates the
// target's Current the way the real fleet counts pending instances.
type fakeFleet struct {
	start time.Time

	mu      sync.Mutex // mu guards the fields below.
	targets map[string]*Target
	calls   []call
	apply   bool
	fail    int // fail this many SetDesired calls
}

func newFakeFleet(targets ...Target) *fakeFleet {
	f := &fakeFleet{start: time.Now(), targets: make(map[string]*Target), apply: true}
	for _, t := range targets {
		f.targets[t.ID] = &t
	}
	return f
}

func (f *fakeFleet) Targets() []Target {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Target
	for _, t := range f.targets {
		out = append(out, *t)
	}
	slices.SortFunc(out, func(a, b Target) int { return strings.Compare(a.ID, b.ID) })
	return out
}

func (f *fakeFleet) SetDesired(_ context.Context, id string, n int, reason string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := call{At: time.Since(f.start), ID: id, N: n, Reason: reason}
	if f.fail > 0 {
		f.fail--
		c.Failed = true
		f.calls = append(f.calls, c)
		return errors.New("fleet unavailable")
	}
	f.calls = append(f.calls, c)
	if t := f.targets[id]; t != nil && f.apply {
		t.Current = n
	}
	return nil
}

func (f *fakeFleet) Calls() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeFleet) remove(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.targets, id)
}

// fakeDemand serves a settable demand map or error.
type fakeDemand struct {
	mu     sync.Mutex // mu guards demand and err.
	demand map[string]int
	err    error
}

func (d *fakeDemand) Demand(context.Context) (map[string]int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.demand, d.err
}

func (d *fakeDemand) set(m map[string]int, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.demand, d.err = m, err
}

var spec8 = Spec{Min: 0, Max: 10, BatchSize: 8}

// startLoop runs a loop over fleet and demand until the test ends. It must
// be called inside a synctest bubble.
func startLoop(t *testing.T, fleet *fakeFleet, demand *fakeDemand, log *logtest.Buffer) *Loop {
	t.Helper()
	l, err := NewLoop(LoopConfig{Fleet: fleet, Demand: demand, Logger: slog.New(slog.NewTextHandler(log, nil))})
	if err != nil {
		t.Fatalf("NewLoop: %v", err)
	}
	runtest.Start(t, l.Run)
	return l
}

func TestLoopWake(t *testing.T) {
	tests := []struct {
		name   string
		demand map[string]int
		err    error
		log    string
	}{
		{name: "demand counted", demand: map[string]int{"a": 1}},
		{name: "demand source has not counted the request yet", demand: map[string]int{}},
		{name: "demand source down", err: errors.New("redis: connection refused"), log: "demand unavailable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fleet := newFakeFleet(Target{ID: "a", Spec: spec8}, Target{ID: "b", Spec: spec8})
				demand := &fakeDemand{}
				var log logtest.Buffer
				l := startLoop(t, fleet, demand, &log)
				time.Sleep(500 * time.Millisecond) // between ticks
				synctest.Wait()

				demand.set(tt.demand, tt.err)
				l.Wake("a")
				synctest.Wait()
				// No fake time passed: the wake did not wait for a tick.
				want := []call{{At: 500 * time.Millisecond, ID: "a", N: 1, Reason: "wake: 1 request needs 1 x 8"}}
				if diff := cmp.Diff(want, fleet.Calls()); diff != "" {
					t.Errorf("SetDesired calls after Wake (-want +got):\n%s", diff)
				}
				if !strings.Contains(log.String(), tt.log) {
					t.Errorf("log %q does not contain %q", log.String(), tt.log)
				}

				// Waking again while the instance is pending asks for nothing more.
				l.Wake("a")
				l.Wake("a")
				time.Sleep(3 * time.Second)
				synctest.Wait()
				if diff := cmp.Diff(want, fleet.Calls()); diff != "" {
					t.Errorf("SetDesired calls after repeated Wake (-want +got):\n%s", diff)
				}
			})
		})
	}
}

func TestLoopWakeUnknownDeployment(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fleet := newFakeFleet(Target{ID: "a", Spec: spec8})
		l := startLoop(t, fleet, &fakeDemand{}, &logtest.Buffer{})
		l.Wake("nope")
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if got := fleet.Calls(); len(got) != 0 {
			t.Errorf("SetDesired calls = %+v, want none", got)
		}
	})
}

func TestLoopTick(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fleet := newFakeFleet(Target{ID: "a", Spec: spec8}, Target{ID: "idle", Spec: spec8})
		demand := &fakeDemand{}
		startLoop(t, fleet, demand, &logtest.Buffer{})

		time.Sleep(500 * time.Millisecond)
		demand.set(map[string]int{"a": 20}, nil) // seen by the tick at 1s
		time.Sleep(10 * time.Second)
		demand.set(map[string]int{}, nil) // gone from the tick at 11s on
		time.Sleep(400 * time.Second)
		synctest.Wait()

		want := []call{
			{At: 1 * time.Second, ID: "a", N: 3, Reason: "wake: 20 requests need 3 x 8"},
			// The stable window still holds the 20 until 71s.
			{At: 71 * time.Second, ID: "a", N: 1, Reason: "no requests for 1m0s: keep 1 until idle 5m0s"},
			{At: 311 * time.Second, ID: "a", N: 0, Reason: "idle 5m0s: scale to min 0"},
		}
		if diff := cmp.Diff(want, fleet.Calls()); diff != "" {
			t.Errorf("SetDesired calls (-want +got):\n%s", diff)
		}
	})
}

func TestLoopDemandErrorHoldsCounts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fleet := newFakeFleet(Target{ID: "a", Spec: spec8, Current: 1})
		demand := &fakeDemand{demand: map[string]int{"a": 8}}
		var log logtest.Buffer
		startLoop(t, fleet, demand, &log)

		time.Sleep(10*time.Second + 500*time.Millisecond)
		demand.set(nil, errors.New("redis: i/o timeout"))
		time.Sleep(10 * time.Minute) // far past IdleTimeout
		synctest.Wait()
		if got := fleet.Calls(); len(got) != 0 {
			t.Fatalf("SetDesired calls while demand was unknown = %+v, want none", got)
		}
		if !strings.Contains(log.String(), "demand unavailable") {
			t.Errorf("log %q does not report the demand error", log.String())
		}

		demand.set(map[string]int{}, nil) // back at 610.5s, with no demand
		time.Sleep(6 * time.Minute)
		synctest.Wait()
		// The 8 requests held until the first sample after the outage
		// (611s): idle counts from there, not from before the outage.
		want := []call{{At: 911 * time.Second, ID: "a", N: 0, Reason: "idle 5m0s: scale to min 0"}}
		if diff := cmp.Diff(want, fleet.Calls()); diff != "" {
			t.Errorf("SetDesired calls (-want +got):\n%s", diff)
		}
	})
}

func TestLoopResync(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fleet := newFakeFleet(Target{ID: "a", Spec: spec8})
		fleet.apply = false // the fleet never reports the new count
		startLoop(t, fleet, &fakeDemand{demand: map[string]int{"a": 1}}, &logtest.Buffer{})
		time.Sleep(45 * time.Second)
		synctest.Wait()
		want := []call{
			{At: 0, ID: "a", N: 1, Reason: "wake: 1 request needs 1 x 8"},
			{At: 30 * time.Second, ID: "a", N: 1, Reason: "stable: max 1 request needs 1 x 8 over 1m0s"},
		}
		if diff := cmp.Diff(want, fleet.Calls()); diff != "" {
			t.Errorf("SetDesired calls (-want +got):\n%s", diff)
		}
	})
}

func TestLoopRetriesFailedSetDesired(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fleet := newFakeFleet(Target{ID: "a", Spec: spec8})
		fleet.fail = 1
		var log logtest.Buffer
		startLoop(t, fleet, &fakeDemand{demand: map[string]int{"a": 9}}, &log)
		time.Sleep(5 * time.Second)
		synctest.Wait()
		want := []call{
			{At: 0, ID: "a", N: 2, Reason: "wake: 9 requests need 2 x 8", Failed: true},
			{At: time.Second, ID: "a", N: 2, Reason: "stable: max 9 requests need 2 x 8 over 1m0s"},
		}
		if diff := cmp.Diff(want, fleet.Calls()); diff != "" {
			t.Errorf("SetDesired calls (-want +got):\n%s", diff)
		}
		if !strings.Contains(log.String(), "set desired failed") {
			t.Errorf("log %q does not report the failed call", log.String())
		}
	})
}

func TestLoopDropsVanishedDeployments(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fleet := newFakeFleet(Target{ID: "a", Spec: spec8}, Target{ID: "b", Spec: spec8})
		l := startLoop(t, fleet, &fakeDemand{}, &logtest.Buffer{})
		synctest.Wait()
		if got := len(l.states); got != 2 {
			t.Fatalf("states = %d, want 2", got)
		}
		fleet.remove("b")
		time.Sleep(time.Second)
		synctest.Wait()
		if _, ok := l.states["b"]; ok || len(l.states) != 1 {
			t.Errorf("states after b vanished = %v, want only a", l.states)
		}
	})
}

func TestNewLoopErrors(t *testing.T) {
	fleet, demand := newFakeFleet(), &fakeDemand{}
	tests := []struct {
		name string
		cfg  LoopConfig
	}{
		{"no fleet", LoopConfig{Demand: demand}},
		{"no demand", LoopConfig{Fleet: fleet}},
		{"negative tick", LoopConfig{Fleet: fleet, Demand: demand, Tick: -time.Second}},
		{"bad decide config", LoopConfig{Fleet: fleet, Demand: demand, Decide: Config{PanicWindow: 2 * time.Minute}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewLoop(tt.cfg); !errors.Is(err, ErrConfig) {
				t.Errorf("NewLoop() error = %v, want ErrConfig", err)
			}
		})
	}
	if _, err := NewLoop(LoopConfig{Fleet: fleet, Demand: demand}); err != nil {
		t.Errorf("NewLoop(defaults) = %v, want nil", err)
	}
}

// TestLoopRunAgainStartsFresh: Run is called again when this replica wins
// the lease back. Meanwhile another leader scaled the deployment down and
// its demand went away; neither the old term's demand history nor a wake
// heard while not leading is demand now.
func TestLoopRunAgainStartsFresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fleet := newFakeFleet(Target{ID: "a", Spec: spec8})
		demand := &fakeDemand{demand: map[string]int{"a": 20}}
		l, err := NewLoop(LoopConfig{Fleet: fleet, Demand: demand})
		if err != nil {
			t.Fatal(err)
		}
		term := func(d time.Duration) {
			ctx, cancel := context.WithTimeout(context.Background(), d)
			defer cancel()
			if err := l.Run(ctx); err != nil {
				t.Errorf("Run() = %v, want nil", err)
			}
		}
		term(10 * time.Second) // lead for 10s, then lose the lease

		// Another leader: the burst ends, the deployment idles to zero.
		// A request arrives and is served there; this replica only hears
		// its wake.
		demand.set(map[string]int{}, nil)
		fleet.mu.Lock()
		fleet.targets["a"].Current = 0
		fleet.mu.Unlock()
		time.Sleep(time.Minute)
		l.Wake("a")
		time.Sleep(5 * time.Minute)

		term(time.Minute) // the lease is back
		want := []call{{At: 0, ID: "a", N: 3, Reason: "wake: 20 requests need 3 x 8"}}
		if diff := cmp.Diff(want, fleet.Calls()); diff != "" {
			t.Errorf("SetDesired calls (-want +got):\n%s", diff)
		}
	})
}
