package sim

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"

	"github.com/google/go-cmp/cmp"
)

// TestLimiterFIFO queues three waiters behind a full limiter and checks
// that released slots go to them in arrival order. The limiter is channels
// and a mutex only, so the test runs in a synctest bubble: synctest.Wait
// returns once every waiter is blocked, with no polling.
func TestLimiterFIFO(t *testing.T) { synctest.Test(t, testLimiterFIFO) }

func testLimiterFIFO(t *testing.T) {
	l := newLimiter(1)
	if err := l.acquire(t.Context()); err != nil {
		t.Fatal(err)
	}
	order := make(chan int, 3)
	for i := range 3 {
		go func() {
			if err := l.acquire(t.Context()); err != nil {
				t.Errorf("waiter %d: %v", i, err)
				return
			}
			order <- i
		}()
		// Let waiter i queue before waiter i+1 arrives.
		synctest.Wait()
		if _, w := l.counts(); w != i+1 {
			t.Fatalf("%d waiting after waiter %d blocked, want %d", w, i, i+1)
		}
	}
	var got []int
	for range 3 {
		l.release()
		synctest.Wait()
		select {
		case i := <-order:
			got = append(got, i)
		default:
			t.Fatal("released slot reached no waiter")
		}
	}
	if diff := cmp.Diff([]int{0, 1, 2}, got); diff != "" {
		t.Errorf("grant order (-want +got):\n%s", diff)
	}
	l.release()
	if r, w := l.counts(); r != 0 || w != 0 {
		t.Errorf("counts after all released = %d running, %d waiting; want 0, 0", r, w)
	}
}

func TestLimiterCancelledWaiterLeaves(t *testing.T) {
	tests := []struct {
		name string
		max  int
	}{{"one slot", 1}, {"two slots", 2}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := newLimiter(tt.max)
				for range tt.max {
					if err := l.acquire(t.Context()); err != nil {
						t.Fatal(err)
					}
				}
				ctx, cancel := context.WithCancel(t.Context())
				errc := make(chan error, 1)
				go func() { errc <- l.acquire(ctx) }()
				synctest.Wait()
				if _, w := l.counts(); w != 1 {
					t.Fatalf("%d waiting after the waiter blocked, want 1", w)
				}
				cancel()
				if err := <-errc; !errors.Is(err, context.Canceled) {
					t.Errorf("cancelled acquire = %v, want context.Canceled", err)
				}
				if r, w := l.counts(); r != tt.max || w != 0 {
					t.Errorf("counts = %d running, %d waiting; want %d, 0", r, w, tt.max)
				}
				// The cancelled waiter must not have taken the next free slot.
				l.release()
				if err := l.acquire(t.Context()); err != nil {
					t.Fatal(err)
				}
				if r, w := l.counts(); r != tt.max || w != 0 {
					t.Errorf("counts after reacquire = %d running, %d waiting; want %d, 0", r, w, tt.max)
				}
			})
		})
	}
}
