package endpoints

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/internal/bubbletest"
	"github.com/thawhq/thaw/internal/redistest"
	"github.com/thawhq/thaw/proxy"
)

// applier records what a Subscriber applies.
type applier struct {
	mu      sync.Mutex
	addrs   map[string]map[string]string
	failed  map[string]string
	removed []string
}

func (a *applier) SetEndpoints(id string, _ int, addrs map[string]string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.addrs[id] = addrs
}
func (a *applier) Fail(id, reason string) { a.mu.Lock(); a.failed[id] = reason; a.mu.Unlock() }
func (a *applier) Recover(id string)      { a.mu.Lock(); delete(a.failed, id); a.mu.Unlock() }
func (a *applier) Remove(id string)       { a.mu.Lock(); a.removed = append(a.removed, id); a.mu.Unlock() }

// setup runs a Publisher and a Subscriber over one Redis until the test
// ends; opts adjust the Publisher's config. Call it inside a synctest
// bubble.
func setup(t *testing.T, opts ...func(*PublisherConfig)) (*Publisher, *Subscriber, *applier, *miniredis.Miniredis, redis.UniversalClient) {
	t.Helper()
	mr, rdb := redistest.New(t)
	deployments := map[string]deploy.Deployment{
		"d1": {ID: "d1", Owner: "alice", ModelName: "m"},
		"d2": {ID: "d2", Owner: "bob", ModelName: "m"},
	}
	cfg := PublisherConfig{Redis: rdb, DrainPoll: 5 * time.Millisecond, Lookup: func(id string) (deploy.Deployment, error) {
		d, ok := deployments[id]
		if !ok {
			return deploy.Deployment{}, errors.New("unknown")
		}
		return d, nil
	}}
	for _, o := range opts {
		o(&cfg)
	}
	pub, err := NewPublisher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	app := &applier{addrs: map[string]map[string]string{}, failed: map[string]string{}}
	sub, err := NewSubscriber(SubscriberConfig{Redis: rdb, Apply: app, MissWait: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	wg.Go(func() { _ = pub.Run(ctx) })
	wg.Go(func() { _ = sub.Run(ctx) })
	// Let the Subscriber subscribe and finish its initial load before the
	// test publishes. An in-memory pipe has no socket buffer: a message
	// published while the Subscriber still loads (not yet reading its
	// subscription) would block miniredis, lock held, and every client
	// with it.
	synctest.Wait()
	return pub, sub, app, mr, rdb
}

func TestPublishedEndpointsReachActivators(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pub, sub, app, _, _ := setup(t)
		pub.SetEndpoints("d1", 8, map[string]string{"i1": "127.0.0.1:9001"})
		pub.SetEndpoints("d2", 4, nil)
		bubbletest.Eventually(t, "d1's instance applied", func() bool {
			app.mu.Lock()
			defer app.mu.Unlock()
			return app.addrs["d1"]["i1"] == "127.0.0.1:9001"
		})
		bubbletest.Eventually(t, "d2 known", func() bool { _, err := sub.Resolve("bob", "bob/m"); return err == nil })

		got, err := sub.Resolve("alice", "alice/m")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(proxy.Target{DeployID: "d1", Model: "alice/m", MaxBatchSize: 8}, got); diff != "" {
			t.Errorf("Resolve (-want +got):\n%s", diff)
		}
		if got, err := sub.Resolve("alice", "deploy_id:d1"); err != nil || got.DeployID != "d1" {
			t.Errorf("Resolve(deploy_id:d1) = %v, %v", got, err)
		}
		if _, err := sub.Resolve("alice", "bob/m"); !errors.Is(err, proxy.ErrUnknownModel) {
			t.Errorf("alice resolved bob's model: %v", err)
		}
		if _, err := sub.Resolve("alice", "deploy_id:d2"); !errors.Is(err, proxy.ErrUnknownModel) {
			t.Errorf("alice resolved bob's deploy_id: %v", err)
		}

		pub.Fail("d1", "crash loop")
		bubbletest.Eventually(t, "failure applied", func() bool { app.mu.Lock(); defer app.mu.Unlock(); return app.failed["d1"] == "crash loop" })
		pub.Recover("d1")
		bubbletest.Eventually(t, "recovery applied", func() bool { app.mu.Lock(); defer app.mu.Unlock(); return app.failed["d1"] == "" })

		pub.Remove("d1")
		bubbletest.Eventually(t, "removal applied", func() bool {
			app.mu.Lock()
			defer app.mu.Unlock()
			return len(app.removed) == 1 && app.removed[0] == "d1"
		})
		if _, err := sub.Resolve("alice", "alice/m"); err == nil {
			t.Error("a removed deployment still resolves")
		}
	})
}

// TestResolveWaitsForANewDeployment: a request for a deployment created a
// moment ago (published after the request arrived) is not a 404.
func TestResolveWaitsForANewDeployment(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pub, sub, _, _, _ := setup(t)
		go func() {
			time.Sleep(50 * time.Millisecond)
			pub.SetEndpoints("d1", 8, nil)
		}()
		if got, err := sub.Resolve("alice", "alice/m"); err != nil || got.DeployID != "d1" {
			t.Errorf("Resolve of a deployment published 50ms later = %v, %v", got, err)
		}
		start := time.Now()
		if _, err := sub.Resolve("alice", "alice/unknown"); !errors.Is(err, proxy.ErrUnknownModel) {
			t.Errorf("unknown model: %v", err)
		}
		if d := time.Since(start); d < 250*time.Millisecond || d > 2*time.Second {
			t.Errorf("unknown model answered after %v, want about MissWait (300ms)", d)
		}
	})
}

// TestDrainedWaitsForEveryReplica: an instance is drained only once no
// activator replica reports a request in flight to it.
func TestDrainedWaitsForEveryReplica(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pub, _, _, mr, rdb := setup(t)
		var mu sync.Mutex
		inflight := map[string]int{"i1": 2}
		rep := InflightReporter{Redis: rdb, Replica: "a1", Interval: 5 * time.Millisecond, Inflight: func() map[string]int {
			mu.Lock()
			defer mu.Unlock()
			out := map[string]int{}
			for k, v := range inflight {
				out[k] = v
			}
			return out
		}}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go rep.Run(ctx)
		bubbletest.Eventually(t, "replica reported", func() bool { return mr.Exists(inflightPrefix + "a1") })

		done := pub.Drained("d1", "i1")
		select {
		case <-done:
			t.Fatal("drained while a replica has 2 requests in flight to the instance")
		case <-time.After(100 * time.Millisecond):
		}
		mu.Lock()
		inflight["i1"] = 0
		mu.Unlock()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			t.Fatal("not drained after the replica's requests finished")
		}
	})
}

// TestPruneRecordsOfDeploymentsGone: a new leader's Publisher deletes, at
// its resync, a record a previous leader left for a deployment that is
// gone (deleted while no leader ran), and its subscribers drop it; a
// record of a deployment that still exists, which this Publisher has not
// written yet, is kept.
func TestPruneRecordsOfDeploymentsGone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, sub, app, _, rdb := setup(t, func(c *PublisherConfig) {
			c.Resync = time.Second
			lookup := c.Lookup
			c.Lookup = func(id string) (deploy.Deployment, error) {
				if id == "d-gone" {
					return deploy.Deployment{}, deploy.ErrNotFound
				}
				return lookup(id)
			}
		})
		ctx := context.Background()
		for _, id := range []string{"d-gone", "d2"} {
			rec := `{"deploy_id":"` + id + `","owner":"bob","model":"bob/` + id + `","capacity":1,"addrs":{}}`
			if err := rdb.Set(ctx, recordPrefix+id, rec, 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
		sub.Resync()
		bubbletest.Eventually(t, "the old records applied", func() bool {
			app.mu.Lock()
			defer app.mu.Unlock()
			_, gone := app.addrs["d-gone"]
			_, kept := app.addrs["d2"]
			return gone && kept
		})
		time.Sleep(2 * time.Second) // the Publisher's resync
		synctest.Wait()
		if n, _ := rdb.Exists(ctx, recordPrefix+"d-gone").Result(); n != 0 {
			t.Error("the record of a deployment gone was not pruned")
		}
		if n, _ := rdb.Exists(ctx, recordPrefix+"d2").Result(); n != 1 {
			t.Error("the record of a deployment that exists was pruned")
		}
		bubbletest.Eventually(t, "subscribers drop the pruned record", func() bool {
			app.mu.Lock()
			defer app.mu.Unlock()
			return len(app.removed) == 1 && app.removed[0] == "d-gone"
		})
	})
}
