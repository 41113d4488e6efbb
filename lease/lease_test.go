package lease

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"testing/synctest"
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

// eventually waits for cond, failing after 3s. It runs in a synctest
// bubble: it first lets every goroutine settle (synctest.Wait), and only
// then lets fake time pass, in 5ms steps.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		synctest.Wait()
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// newRedis returns a miniredis and a client of it over in-memory pipes
// (mr.Dial), which a synctest bubble can wait on. Call it inside the bubble.
func newRedis(t *testing.T) (*miniredis.Miniredis, *redis.Client) {
	mr := miniredis.NewMiniRedis()
	rdb := redis.NewClient(&redis.Options{
		Addr:   "127.0.0.1:6379", // never dialed; an IP, so nothing resolves it
		Dialer: func(context.Context, string, string) (net.Conn, error) { return mr.Dial() },
	})
	t.Cleanup(func() {
		rdb.Close()
		mr.Close()
	})
	return mr, rdb
}

func TestOneLeaderAndHandover(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, rdb := newRedis(t)
		a := start(t, rdb, "a")
		eventually(t, "a to lead", a.leading.Load)
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
		eventually(t, "b to take over after a stops", b.leading.Load)
		if a.leading.Load() {
			t.Fatal("a still leads after it stopped")
		}
	})
}

func TestLostLeaseStopsLeading(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mr, rdb := newRedis(t)
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
	})
}
