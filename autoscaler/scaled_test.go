package autoscaler

import (
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/internal/runtest"
)

// scaleLog records what LoopConfig.Scaled is told, At after start.
type scaleLog struct {
	start time.Time

	mu     sync.Mutex // mu guards scales.
	scales []Scale
}

func (s *scaleLog) add(sc Scale) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sc.At = time.Time{}.Add(sc.At.Sub(s.start))
	s.scales = append(s.scales, sc)
}

func (s *scaleLog) all() []Scale {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Scale(nil), s.scales...)
}

// runScaled runs a loop over fleet and demand that reports its decisions
// to the returned log, until the test ends. Call it in a synctest bubble.
func runScaled(t *testing.T, fleet *fakeFleet, demand *fakeDemand) *scaleLog {
	t.Helper()
	log := &scaleLog{start: time.Now()}
	l, err := NewLoop(LoopConfig{Fleet: fleet, Demand: demand, Logger: slog.New(slog.DiscardHandler), Scaled: log.add})
	if err != nil {
		t.Fatal(err)
	}
	runtest.Start(t, l.Run)
	return log
}

// after is d after the start of the scale log's clock.
func after(d time.Duration) time.Time { return time.Time{}.Add(d) }

// TestScaled: each applied decision is reported once, with the count
// before and after and the decision's reason.
func TestScaled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fleet := newFakeFleet(Target{ID: "a", Spec: spec8})
		demand := &fakeDemand{}
		log := runScaled(t, fleet, demand)
		time.Sleep(500 * time.Millisecond)
		demand.set(map[string]int{"a": 20}, nil)
		time.Sleep(10 * time.Second)
		demand.set(map[string]int{}, nil)
		time.Sleep(400 * time.Second)
		synctest.Wait()
		want := []Scale{
			{DeployID: "a", From: 0, To: 3, Reason: "wake: 20 requests need 3 x 8", At: after(time.Second)},
			{DeployID: "a", From: 3, To: 1, Reason: "no requests for 1m0s: keep 1 until idle 5m0s", At: after(71 * time.Second)},
			{DeployID: "a", From: 1, To: 0, Reason: "idle 5m0s: scale to min 0", At: after(311 * time.Second)},
		}
		if d := cmp.Diff(want, log.all()); d != "" {
			t.Errorf("Scaled (-want +got):\n%s", d)
		}
	})
}

// TestScaledNotRepeated: a repeated ask (Resync) is not a new decision, and
// a failed SetDesired is reported only once it succeeds.
func TestScaledNotRepeated(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fleet := newFakeFleet(Target{ID: "a", Spec: spec8})
		fleet.apply, fleet.fail = false, 1 // the fleet never reports the new count
		log := runScaled(t, fleet, &fakeDemand{demand: map[string]int{"a": 1}})
		time.Sleep(45 * time.Second)
		synctest.Wait()
		if n := len(fleet.Calls()); n != 3 {
			t.Fatalf("%d SetDesired calls, want 3 (a failure, the ask, its resync)", n)
		}
		want := []Scale{{DeployID: "a", From: 0, To: 1, Reason: "stable: max 1 request needs 1 x 8 over 1m0s", At: after(time.Second)}}
		if d := cmp.Diff(want, log.all()); d != "" {
			t.Errorf("Scaled (-want +got):\n%s", d)
		}
	})
}
