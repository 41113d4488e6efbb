package proxy

import (
	"context"
	"errors"
	"testing"
	"time"
)

func newTestPool() (*pool, *fakeSink) {
	sink := &fakeSink{last: map[string][2]int{}}
	return newPool("d1", sink), sink
}

func mustAcquire(t *testing.T, p *pool) *endpoint {
	t.Helper()
	ep, held, _, err := p.acquire(context.Background(), time.Second, 10)
	if err != nil || held {
		t.Fatalf("acquire = %v, held %v; want a free slot at once", err, held)
	}
	return ep
}

// TestPoolCapacityGrows: raising per-instance capacity releases waiters at
// once.
func TestPoolCapacityGrows(t *testing.T) {
	p, sink := newTestPool()
	p.set(1, map[string]string{"a": "addr-a"})
	mustAcquire(t, p)
	got := make(chan error, 1)
	go func() {
		_, _, _, err := p.acquire(context.Background(), 3*time.Second, 10)
		got <- err
	}()
	eventually(t, "one held", func() bool { h, _ := p.counts(); return h == 1 })
	p.set(2, map[string]string{"a": "addr-a"})
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("held acquire: %v", err)
		}
	case <-time.After(time.Second):
		t.Fatal("waiter not released when capacity grew")
	}
	if c := sink.get("d1"); c != [2]int{0, 2} {
		t.Errorf("demand = %v, want [0 2]", c)
	}
}

// TestPoolZeroCapacityMeansOne: a capacity below 1 still lets requests
// through one at a time rather than holding them forever.
func TestPoolZeroCapacityMeansOne(t *testing.T) {
	p, _ := newTestPool()
	p.set(0, map[string]string{"a": "addr-a"})
	mustAcquire(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, held, _, err := p.acquire(ctx, time.Second, 10); !held || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("second acquire = held %v, %v; want held until the context ends", held, err)
	}
}

// TestPoolReAddedWhileDraining: an instance taken out of the set while it
// serves and put back before that request ends must stay routable.
func TestPoolReAddedWhileDraining(t *testing.T) {
	p, _ := newTestPool()
	p.set(1, map[string]string{"a": "addr-a"})
	ep := mustAcquire(t, p)
	p.set(1, map[string]string{})
	p.set(1, map[string]string{"a": "addr-a"})
	p.release(ep)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	got, held, _, err := p.acquire(ctx, time.Second, 10)
	if err != nil || held || got.addr != "addr-a" {
		t.Fatalf("acquire after the old request ended = %v, held %v; want instance a at once", err, held)
	}
}
