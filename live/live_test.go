package live

import (
	"context"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/thawhq/thaw/api"
	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/fleet"
)

func newRedis(t *testing.T) (*miniredis.Miniredis, *redis.Client) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	return mr, rdb
}

// TestFollowerSeesLeader: what the leader publishes, a follower shows:
// status, instances, counts and desired; a deployment the leader dropped
// goes from the follower's view at the next write; one it never published
// reads as not reconciled yet.
func TestFollowerSeesLeader(t *testing.T) {
	_, rdb := newRedis(t)
	ctx := context.Background()
	since := time.Date(2026, 11, 28, 4, 0, 0, 0, time.UTC)
	views := map[string]View{
		"d1": {
			Live:      deploy.Live{Status: deploy.StatusRunning, Instances: deploy.Instances{Desired: 2, Running: 1, Pending: 1}},
			Instances: []api.InstanceView{{ID: "d1/i-1", State: "running", Since: since}, {ID: "d1/i-2", State: "pending", Since: since, Reason: "no node has 1 free GPU"}},
			Counts:    fleet.Counts{DeployID: "d1", Model: "alice/m", Ready: 1, Pending: 1},
		},
		"d2": {Live: deploy.Live{Status: deploy.StatusRunning, Instances: deploy.Instances{Desired: 1, Running: 1}}},
	}
	pub, err := NewPublisher(Config{Redis: rdb}, func() map[string]View { return views })
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewReader(Config{Redis: rdb})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.write(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	d1 := deploy.Deployment{ID: "d1"}
	if diff := cmp.Diff(views["d1"].Live, r.Live(d1)); diff != "" {
		t.Errorf("Live (-leader +follower):\n%s", diff)
	}
	if diff := cmp.Diff(views["d1"].Instances, r.Instances("d1")); diff != "" {
		t.Errorf("Instances (-leader +follower):\n%s", diff)
	}
	if n, ok := r.Desired("d1"); n != 2 || !ok {
		t.Errorf("Desired(d1) = %d, %v; want 2, true", n, ok)
	}
	if got := len(r.Counts()); got != 2 {
		t.Errorf("%d counts, want 2", got)
	}

	delete(views, "d2")
	if err := pub.write(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	d2 := deploy.Deployment{ID: "d2", Settings: deploy.Settings{MinInstances: 1, MaxInstances: 1}}
	if diff := cmp.Diff(fleet.Unreconciled(d2), r.Live(d2)); diff != "" {
		t.Errorf("a deployment the leader dropped (-unreconciled +follower):\n%s", diff)
	}
	if _, ok := r.Desired("d2"); ok {
		t.Error("Desired(d2) known after the leader dropped it")
	}
}

// TestViewsExpire: a leader that stopped writing leaves nothing behind
// after Expiry; a view that does not parse is skipped, not fatal.
func TestViewsExpire(t *testing.T) {
	mr, rdb := newRedis(t)
	ctx := context.Background()
	pub, err := NewPublisher(Config{Redis: rdb, Expiry: 10 * time.Second}, func() map[string]View {
		return map[string]View{"d1": {Live: deploy.Live{Status: deploy.StatusRunning}}}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.write(ctx); err != nil {
		t.Fatal(err)
	}
	mr.HSet(key, "d9", "{not json")
	r, err := NewReader(Config{Redis: rdb})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got := r.Live(deploy.Deployment{ID: "d1"}).Status; got != deploy.StatusRunning {
		t.Errorf("d1 status %q, want running", got)
	}
	mr.FastForward(11 * time.Second)
	if err := r.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got := r.Live(deploy.Deployment{ID: "d1"}).Status; got != deploy.StatusInitializing {
		t.Errorf("after expiry d1 status %q, want initializing", got)
	}
}
