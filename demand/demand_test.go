package demand

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/thawhq/thaw/internal/bubbletest"
	"github.com/thawhq/thaw/internal/redistest"
	"github.com/thawhq/thaw/internal/runtest"
)

// runReporter runs a Reporter until the test ends (or stop is called).
func runReporter(t *testing.T, cfg ReporterConfig) (r *Reporter, stop func()) {
	t.Helper()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	r, err := NewReporter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r, runtest.Start(t, r.Run)
}

func counts(t *testing.T, rdb redis.UniversalClient) map[string]Counts {
	t.Helper()
	c, err := Reader{Redis: rdb}.Counts(context.Background())
	if err != nil {
		t.Fatalf("Counts: %v", err)
	}
	return c
}

func waitCounts(t *testing.T, rdb redis.UniversalClient, want map[string]Counts) {
	t.Helper()
	var got map[string]Counts
	bubbletest.Eventually(t, "counts", func() bool {
		got = counts(t, rdb)
		return cmp.Equal(want, got)
	})
}

func TestNewReporterRequires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, rdb := redistest.New(t)
		for _, cfg := range []ReporterConfig{{Replica: "r1"}, {Redis: rdb}} {
			if _, err := NewReporter(cfg); err == nil {
				t.Errorf("NewReporter(%+v) succeeded", cfg)
			}
		}
	})
}

func TestCountsSumReplicas(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, rdb := redistest.New(t)
		r1, _ := runReporter(t, ReporterConfig{Redis: rdb, Replica: "r1"})
		r2, _ := runReporter(t, ReporterConfig{Redis: rdb, Replica: "r2"})
		r1.Set("d1", 2, 1)
		r2.Set("d1", 1, 3)
		r2.Set("d2", 0, 1)
		r1.Set("d3", 5, 0)
		r1.Set("d3", 4, 0) // the latest value counts
		waitCounts(t, rdb, map[string]Counts{"d1": {Held: 3, InFlight: 4}, "d2": {InFlight: 1}, "d3": {Held: 4}})
		got, err := Reader{Redis: rdb}.Demand(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(map[string]int{"d1": 7, "d2": 1, "d3": 4}, got); diff != "" {
			t.Errorf("Demand (-want +got):\n%s", diff)
		}
	})
}

func TestZeroCountsRemoved(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mr, rdb := redistest.New(t)
		r, _ := runReporter(t, ReporterConfig{Redis: rdb, Replica: "r1"})
		r.Set("d1", 1, 0)
		r.Set("d2", 0, 2)
		waitCounts(t, rdb, map[string]Counts{"d1": {Held: 1}, "d2": {InFlight: 2}})
		r.Set("d1", 0, 0)
		waitCounts(t, rdb, map[string]Counts{"d2": {InFlight: 2}})
		r.Set("d2", 0, 0)
		waitCounts(t, rdb, map[string]Counts{})
		bubbletest.Eventually(t, "the replica's key deleted", func() bool { return !mr.Exists(keyPrefix + "r1") })
	})
}

// TestReplicaExpires: a replica that stops writing (crashed) drops out of the
// sum after TTL.
func TestReplicaExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mr, rdb := redistest.New(t)
		dead, _ := runReporter(t, ReporterConfig{Redis: rdb, Replica: "dead", TTL: 5 * time.Second, Heartbeat: time.Hour})
		live, _ := runReporter(t, ReporterConfig{Redis: rdb, Replica: "live", TTL: time.Minute, Heartbeat: time.Hour})
		dead.Set("d1", 3, 0)
		live.Set("d1", 1, 1)
		waitCounts(t, rdb, map[string]Counts{"d1": {Held: 4, InFlight: 1}})
		if ttl := mr.TTL(keyPrefix + "dead"); ttl != 5*time.Second {
			t.Errorf("TTL of the replica's key = %s, want 5s", ttl)
		}
		mr.FastForward(4 * time.Second)
		if got := counts(t, rdb); !cmp.Equal(map[string]Counts{"d1": {Held: 4, InFlight: 1}}, got) {
			t.Errorf("before TTL: %v", got)
		}
		mr.FastForward(2 * time.Second)
		if diff := cmp.Diff(map[string]Counts{"d1": {Held: 1, InFlight: 1}}, counts(t, rdb)); diff != "" {
			t.Errorf("after the dead replica's TTL (-want +got):\n%s", diff)
		}
	})
}

// TestHeartbeatRefreshesTTL: a live replica's numbers do not expire.
func TestHeartbeatRefreshesTTL(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mr, rdb := redistest.New(t)
		r, _ := runReporter(t, ReporterConfig{Redis: rdb, Replica: "r1", TTL: 5 * time.Second, Heartbeat: 20 * time.Millisecond})
		r.Set("d1", 1, 0)
		waitCounts(t, rdb, map[string]Counts{"d1": {Held: 1}})
		mr.FastForward(4 * time.Second)
		bubbletest.Eventually(t, "TTL refreshed by the heartbeat", func() bool { return mr.TTL(keyPrefix+"r1") == 5*time.Second })
		mr.FastForward(4 * time.Second)
		if diff := cmp.Diff(map[string]Counts{"d1": {Held: 1}}, counts(t, rdb)); diff != "" {
			t.Errorf("after 8s with heartbeats (-want +got):\n%s", diff)
		}
	})
}

func TestStopRemovesKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mr, rdb := redistest.New(t)
		r, stop := runReporter(t, ReporterConfig{Redis: rdb, Replica: "r1"})
		r.Set("d1", 1, 0)
		waitCounts(t, rdb, map[string]Counts{"d1": {Held: 1}})
		stop()
		if mr.Exists(keyPrefix + "r1") {
			t.Error("replica's key still there after Run returned")
		}
	})
}

func TestCountsIgnoresGarbage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mr, rdb := redistest.New(t)
		mr.HSet(keyPrefix+"x", "d1", "garbage", "d2", "1 2", "d3", "1 x")
		if diff := cmp.Diff(map[string]Counts{"d2": {Held: 1, InFlight: 2}}, counts(t, rdb)); diff != "" {
			t.Errorf("counts (-want +got):\n%s", diff)
		}
	})
}

// TestWakeAfterCounts: the wake-up is published after the demand that caused
// it is written, so a listener reading demand on wake sees the request.
func TestWakeAfterCounts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mr, rdb := redistest.New(t)
		type wake struct {
			ID     string
			Demand int
		}
		got := make(chan wake, 16)
		defer runtest.Start(t, func(ctx context.Context) error {
			return ListenWakes(ctx, rdb, func(id string) {
				d, err := Reader{Redis: rdb}.Demand(context.Background())
				if err != nil {
					t.Errorf("Demand: %v", err)
				}
				got <- wake{id, d[id]}
			})
		})()
		bubbletest.Eventually(t, "subscribed", func() bool { return mr.PubSubNumSub(wakeChannel)[wakeChannel] == 1 })

		// The reporter's writes are slow, so a wake published before them would
		// find no demand.
		slow := redistest.Client(t, mr)
		slow.AddHook(slowPipelines{30 * time.Millisecond})
		r, _ := runReporter(t, ReporterConfig{Redis: slow, Replica: "r1"})
		for i, id := range []string{"d1", "d2", "d3"} {
			r.Set(id, i+1, 0)
			r.Wake(id)
			select {
			case w := <-got:
				if diff := cmp.Diff(wake{id, i + 1}, w); diff != "" {
					t.Errorf("wake (-want +got):\n%s", diff)
				}
			case <-time.After(3 * time.Second):
				t.Fatalf("no wake for %s", id)
			}
		}
		select {
		case w := <-got:
			t.Errorf("unexpected extra wake %+v", w)
		case <-time.After(2 * time.Second): // fake time: past heartbeats too
		}
	})
}

// slowPipelines delays every pipeline (and MULTI transaction).
type slowPipelines struct{ d time.Duration }

func (slowPipelines) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (slowPipelines) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (s slowPipelines) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		time.Sleep(s.d)
		return next(ctx, cmds)
	}
}

// TestRedisOutage: numbers set while Redis is down reach it once it is back,
// without waiting for the next heartbeat.
func TestRedisOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mr, rdb := redistest.New(t)
		// Redis is down for the reporter while its writes fail.
		var down atomic.Bool
		var failed atomic.Int64
		reporting := redistest.Client(t, mr)
		reporting.AddHook(failPipelines{down: &down, failed: &failed})
		r, _ := runReporter(t, ReporterConfig{Redis: reporting, Replica: "r1", Heartbeat: time.Hour})
		down.Store(true)
		r.Set("d1", 2, 0)
		bubbletest.Eventually(t, "a write failing while Redis is down", func() bool { return failed.Load() > 0 })
		down.Store(false)
		waitCounts(t, rdb, map[string]Counts{"d1": {Held: 2}})
	})
}

// failPipelines fails every pipeline (and MULTI transaction) while down is
// set: Redis unreachable for the Reporter's writes.
type failPipelines struct {
	down   *atomic.Bool
	failed *atomic.Int64 // counts the failed writes, if not nil
}

func (failPipelines) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (failPipelines) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (f failPipelines) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if f.down.Load() {
			if f.failed != nil {
				f.failed.Add(1)
			}
			return errors.New("redis: connection refused")
		}
		return next(ctx, cmds)
	}
}

// TestWakeAfterOutage: a wake the Reporter could not publish while
// Redis was down is published when Redis is back within TTL, and dropped
// after that: its request was held too long ago to still be news (if it is
// still held, its held count says so).
func TestWakeAfterOutage(t *testing.T) {
	tests := []struct {
		name     string
		outage   time.Duration
		heldFor  time.Duration  // the request leaves after this (hold timeout)
		want     []string       // wakes published
		wantDemd map[string]int // demand read after the outage
	}{
		{name: "outage shorter than TTL: the wake is late but news", outage: 2 * time.Second, heldFor: time.Minute,
			want: []string{"d1"}, wantDemd: map[string]int{"d1": 1}},
		{name: "the request left during an outage longer than TTL: no wake", outage: 10 * time.Second, heldFor: 3 * time.Second,
			want: nil, wantDemd: map[string]int{}},
		{name: "still held after an outage longer than TTL: its count is the news", outage: 10 * time.Second, heldFor: time.Minute,
			want: nil, wantDemd: map[string]int{"d1": 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				mr := miniredis.NewMiniRedis()
				t.Cleanup(mr.Close)
				rdb := redistest.Client(t, mr)
				var down atomic.Bool
				reporting := redistest.Client(t, mr)
				reporting.AddHook(failPipelines{down: &down})

				ctx, cancel := context.WithCancel(context.Background())
				var wg sync.WaitGroup
				var mu sync.Mutex // mu guards woken.
				var woken []string
				wg.Go(func() {
					_ = ListenWakes(ctx, rdb, func(id string) {
						mu.Lock()
						defer mu.Unlock()
						woken = append(woken, id)
					})
				})
				r, err := NewReporter(ReporterConfig{Redis: reporting, Replica: "r1", Logger: slog.New(slog.DiscardHandler)})
				if err != nil {
					t.Fatal(err)
				}
				wg.Go(func() { _ = r.Run(ctx) })
				defer func() {
					cancel()
					wg.Wait()
				}()
				synctest.Wait()

				down.Store(true)
				r.Set("d1", 1, 0)
				r.Wake("d1")
				var left sync.WaitGroup
				left.Go(func() {
					time.Sleep(tt.heldFor)
					r.Set("d1", 0, 0)
				})
				time.Sleep(tt.outage)
				down.Store(false)
				time.Sleep(time.Second) // past a heartbeat
				synctest.Wait()

				mu.Lock()
				got := slices.Clone(woken)
				mu.Unlock()
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("wakes published (-want +got):\n%s", diff)
				}
				d, err := Reader{Redis: rdb}.Demand(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(tt.wantDemd, d); diff != "" {
					t.Errorf("demand after the outage (-want +got):\n%s", diff)
				}
				cancel()
				left.Wait()
			})
		})
	}
}
