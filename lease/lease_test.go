package lease

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// leader runs a Lease in the background and reports whether it leads.
type leader struct {
	leading atomic.Bool
	lost    atomic.Int32
	cancel  context.CancelFunc
	done    chan struct{}
}

func start(t *testing.T, rdb redis.UniversalClient, id string) *leader {
	t.Helper()
	l, err := New(Config{Redis: rdb, Key: "thaw:leader:test", ID: id, TTL: 300 * time.Millisecond, Renew: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ld := &leader{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(ld.done)
		_ = l.Run(ctx, func(ctx context.Context) error {
			ld.leading.Store(true)
			<-ctx.Done()
			ld.leading.Store(false)
			ld.lost.Add(1)
			return nil
		})
	}()
	t.Cleanup(func() { cancel(); <-ld.done })
	return ld
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestOneLeaderAndHandover(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	a := start(t, rdb, "a")
	eventually(t, "a to lead", a.leading.Load)
	b := start(t, rdb, "b")
	for i := 0; i < 20; i++ { // 200ms: several renew periods
		if b.leading.Load() {
			t.Fatal("b leads while a holds the lease")
		}
		time.Sleep(10 * time.Millisecond)
	}
	a.cancel()
	<-a.done
	eventually(t, "b to take over after a stops", b.leading.Load)
	if a.leading.Load() {
		t.Fatal("a still leads after it stopped")
	}
}

func TestLostLeaseStopsLeading(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	a := start(t, rdb, "a")
	eventually(t, "a to lead", a.leading.Load)
	// Another replica took the key (a's lease expired while it was paused).
	if err := mr.Set("thaw:leader:test", "other"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a to notice the loss", func() bool { return a.lost.Load() > 0 })
	if a.leading.Load() {
		t.Fatal("a leads without the lease")
	}
	// The other holder dies: its key expires, and a leads again.
	mr.FastForward(time.Second)
	mr.Del("thaw:leader:test")
	eventually(t, "a to lead again", a.leading.Load)
}
