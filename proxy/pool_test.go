package proxy

import (
	"context"
	"errors"
	"testing"
	"time"
)

func newTestPool() (*pool, *fakeSink) {
	sink := &fakeSink{last: map[string]Load{}}
	return newPool("d1", sink), sink
}

func mustAcquire(t *testing.T, p *pool) *lease {
	t.Helper()
	l, g, err := p.acquire(context.Background(), time.Second, 10)
	if err != nil || g.held {
		t.Fatalf("acquire = %v, held %v; want a free slot at once", err, g.held)
	}
	return l
}

// TestPoolCapacityGrows: raising per-instance capacity releases waiters at
// once.
func TestPoolCapacityGrows(t *testing.T) {
	p, sink := newTestPool()
	p.set(1, map[string]string{"a": "addr-a"})
	mustAcquire(t, p)
	got := make(chan error, 1)
	go func() {
		_, _, err := p.acquire(context.Background(), 3*time.Second, 10)
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
	if c := sink.get("d1"); c != (Load{InFlight: 2}) {
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
	if _, g, err := p.acquire(ctx, time.Second, 10); !g.held || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("second acquire = held %v, %v; want held until the context ends", g.held, err)
	}
}

// TestPoolReAddedWhileDraining: an instance taken out of the set while it
// serves and put back before that request ends must stay routable.
func TestPoolReAddedWhileDraining(t *testing.T) {
	p, _ := newTestPool()
	p.set(1, map[string]string{"a": "addr-a"})
	l := mustAcquire(t, p)
	p.set(1, map[string]string{})
	p.set(1, map[string]string{"a": "addr-a"})
	l.Release()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	got, g, err := p.acquire(ctx, time.Second, 10)
	if err != nil || g.held || got.ep.addr != "addr-a" {
		t.Fatalf("acquire after the old request ended = %v, held %v; want instance a at once", err, g.held)
	}
}

// TestLeaseReleaseOnce: releasing a lease twice (a deferred Release after
// an explicit one) frees its slot once: the other request's slot stays
// taken.
func TestLeaseReleaseOnce(t *testing.T) {
	p, sink := newTestPool()
	p.set(2, map[string]string{"a": "addr-a"})
	first := mustAcquire(t, p)
	mustAcquire(t, p)
	first.Release()
	first.Release()
	if _, inflight := p.counts(); inflight != 1 {
		t.Errorf("in flight after releasing one of two leases twice = %d, want 1", inflight)
	}
	if c := sink.get("d1"); c != (Load{InFlight: 1}) {
		t.Errorf("demand = %v, want [0 1]", c)
	}
}

// TestPoolQueueing: acquire tells whether a request waited, and whether it
// arrived with no ready instance (cold) or only found every slot busy.
func TestPoolQueueing(t *testing.T) {
	tests := []struct {
		name      string
		instances map[string]string
		busy      bool // its one slot is taken before the request
		want      queueing
	}{
		{"free slot", map[string]string{"a": "addr-a"}, false, queueing{}},
		{"every slot busy", map[string]string{"a": "addr-a"}, true, queueing{held: true}},
		{"no instance", nil, false, queueing{held: true, cold: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, _ := newTestPool()
			p.set(1, tt.instances)
			if tt.busy {
				mustAcquire(t, p)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel()
			l, g, _ := p.acquire(ctx, time.Second, 10)
			if l != nil {
				defer l.Release()
			}
			if g != tt.want {
				t.Errorf("queueing = %+v, want %+v", g, tt.want)
			}
		})
	}
}
