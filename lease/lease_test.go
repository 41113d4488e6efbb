package lease

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/thawhq/thaw/internal/bubbletest"
	"github.com/thawhq/thaw/internal/redistest"
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

func TestOneLeaderAndHandover(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, rdb := redistest.New(t)
		a := start(t, rdb, "a")
		bubbletest.Eventually(t, "a to lead", a.leading.Load)
		b := start(t, rdb, "b")
		for i := 0; i < 20; i++ { // 2s of fake time: 40 renew periods, 6 TTLs
			time.Sleep(100 * time.Millisecond)
			synctest.Wait()
			if b.leading.Load() {
				t.Fatal("b leads while a holds the lease")
			}
		}
		a.cancel()
		<-a.done
		bubbletest.Eventually(t, "b to take over after a stops", b.leading.Load)
		if a.leading.Load() {
			t.Fatal("a still leads after it stopped")
		}
	})
}

func TestLostLeaseStopsLeading(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mr, rdb := redistest.New(t)
		a := start(t, rdb, "a")
		bubbletest.Eventually(t, "a to lead", a.leading.Load)
		// Another replica took the key (a's lease expired while it was paused).
		if err := mr.Set("thaw:leader:test", "other"); err != nil {
			t.Fatal(err)
		}
		bubbletest.Eventually(t, "a to notice the loss", func() bool { return a.lost.Load() > 0 })
		if a.leading.Load() {
			t.Fatal("a leads without the lease")
		}
		// The other holder dies: its key expires, and a leads again.
		mr.FastForward(time.Second)
		mr.Del("thaw:leader:test")
		bubbletest.Eventually(t, "a to lead again", a.leading.Load)
	})
}
