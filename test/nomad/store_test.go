package nomadtest

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/nomad/api"

	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/nomad"
)

// testBackend returns a VariableStore under prefixes of its own, removing
// what is left there when the test ends.
func testBackend(t *testing.T) nomad.VariableStore {
	t.Helper()
	suffix := uniqueName(time.Now().Format("150405"))
	b := nomad.VariableStore{Client: nomadClient(), Prefix: "thaw/test-records-" + suffix, NamesPrefix: "thaw/test-names-" + suffix}
	t.Cleanup(func() {
		for _, prefix := range []string{b.Prefix, b.NamesPrefix} {
			metas, _, err := b.Client.Variables().PrefixList(prefix+"/", nil)
			if err != nil {
				t.Errorf("list %s: %v", prefix, err)
			}
			for _, m := range metas {
				if _, err := b.Client.Variables().Delete(m.Path, nil); err != nil {
					t.Errorf("delete %s: %v", m.Path, err)
				}
			}
		}
	})
	return b
}

func storeDep(name string) deploy.Deployment {
	now := time.Now().UTC().Truncate(time.Second)
	return deploy.Deployment{Owner: "dev", ModelName: name, CreatedAt: now, UpdatedAt: now, HFToken: "hf_secret",
		Config:   deploy.Config{GPU: "H100-80GB", NumGPUs: 2, MaxBatchSize: 8, Weights: deploy.Weights{Repo: "org/m"}},
		Settings: deploy.Settings{MinInstances: 0, MaxInstances: 3}}
}

func openShared(t *testing.T, b nomad.VariableStore) *deploy.Store {
	t.Helper()
	s, err := deploy.NewSharedStore(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestVariableStore: deployments kept in Nomad Variables survive a new
// Store (a restarted thaw server), and deletes stick.
func TestVariableStore(t *testing.T) {
	needCluster(t)
	backend := testBackend(t)
	s := openShared(t, backend)
	a, err := s.Create(storeDep("a"), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Create(storeDep("b"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(a.ID, func(d *deploy.Deployment) { d.Settings.MaxInstances = 5 }, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(b.ID); err != nil {
		t.Fatal(err)
	}

	again := openShared(t, backend)
	want := a
	want.Settings.MaxInstances = 5
	if diff := cmp.Diff([]deploy.Deployment{want}, again.List("")); diff != "" {
		t.Errorf("deployments after reopening the store (-want +got):\n%s", diff)
	}
	if err := again.Delete(a.ID); err != nil {
		t.Fatal(err)
	}
	if left, err := backend.Load(); err != nil || len(left) != 0 {
		t.Errorf("after deleting everything: %v, %v", left, err)
	}
	if names, _, err := backend.Client.Variables().PrefixList(backend.NamesPrefix+"/", nil); err != nil || len(names) != 0 {
		t.Errorf("name reservations after deleting everything: %d, %v", len(names), err)
	}
}

// TestSharedStore: two stores over one Nomad, as two thaw server replicas
// hold them, each following the other (Run): a create, update or delete on
// one shows on the other within a second; racing writes are refused with
// ErrConflict, never lost; one model name is created once.
func TestSharedStore(t *testing.T) {
	needCluster(t)
	backend := testBackend(t)
	a, b := openShared(t, backend), openShared(t, backend)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, s := range []*deploy.Store{a, b} {
		wg.Go(func() {
			if err := s.Run(ctx); err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	bChanged := b.Subscribe()

	d, err := a.Create(storeDep("shared"), nil)
	if err != nil {
		t.Fatal(err)
	}
	within(t, "the create on A to show on B", func() bool { got, err := b.Get(d.ID); return err == nil && cmp.Equal(got, d) })
	select {
	case <-bChanged:
	default:
		t.Error("B's subscribers got no signal for A's create")
	}

	up, err := b.Update(d.ID, func(d *deploy.Deployment) { d.Settings.MaxInstances = 7 }, nil)
	if err != nil {
		t.Fatal(err)
	}
	within(t, "the update on B to show on A", func() bool { got, err := a.Get(d.ID); return err == nil && cmp.Equal(got, up) })

	t.Run("racing updates", func(t *testing.T) { racingUpdates(t, backend, d.ID) })
	t.Run("racing creates", func(t *testing.T) {
		racingCreates(t, "race", a, b)
		racingCreates(t, "race-blind", openShared(t, backend), openShared(t, backend))
	})

	within(t, "A to follow the racing updates", func() bool { got, _ := a.Get(d.ID); return got.Settings.MinInstances == 3 })
	if err := a.Delete(d.ID); err != nil {
		t.Fatal(err)
	}
	within(t, "the delete on A to show on B", func() bool { _, err := b.Get(d.ID); return errors.Is(err, deploy.ErrNotFound) })
	if _, err := b.Create(storeDep("SHARED"), nil); err != nil {
		t.Errorf("create on B of the name A deleted: %v", err)
	}
}

// racingUpdates: two stores that both read version v of id (neither
// follows, so neither can see the other's write) update it at once:
// exactly one wins, the other gets ErrConflict and then holds the winner's
// record.
func racingUpdates(t *testing.T, backend nomad.VariableStore, id string) {
	x, y := openShared(t, backend), openShared(t, backend)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	saved := make([]deploy.Deployment, 2)
	for i, s := range []*deploy.Store{x, y} {
		wg.Go(func() {
			saved[i], errs[i] = s.Update(id, func(d *deploy.Deployment) { d.Settings.MinInstances = i + 1 }, nil)
		})
	}
	wg.Wait()
	won := -1
	for i, err := range errs {
		switch {
		case err == nil && won == -1:
			won = i
		case err == nil:
			t.Fatalf("both racing updates succeeded: one was lost")
		case !errors.Is(err, deploy.ErrConflict):
			t.Errorf("losing update: %v, want ErrConflict", err)
		}
	}
	if won == -1 {
		t.Fatalf("no racing update succeeded: %v", errs)
	}
	lost := []*deploy.Store{x, y}[1-won]
	if got, err := lost.Get(id); err != nil || !cmp.Equal(got, saved[won]) {
		t.Errorf("the losing store after ErrConflict holds %+v (%v), want the winner's %+v", got.Settings, err, saved[won].Settings)
	}
	// The loser retries on what it now holds, and succeeds; a delete by a
	// store that missed that change conflicts too.
	if _, err := lost.Update(id, func(d *deploy.Deployment) { d.Settings.MinInstances = 3 }, nil); err != nil {
		t.Errorf("retry after ErrConflict: %v", err)
	}
	if err := []*deploy.Store{x, y}[won].Delete(id); !errors.Is(err, deploy.ErrConflict) {
		t.Errorf("delete by a store that missed an update: %v, want ErrConflict", err)
	}
}

// racingCreates: the same model name (in another case) created at once on
// two stores, whether they follow each other or nobody: one create wins,
// the other is refused as a duplicate.
func racingCreates(t *testing.T, name string, x, y *deploy.Store) {
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, s := range []*deploy.Store{x, y} {
		wg.Go(func() { _, errs[i] = s.Create(storeDep([]string{name, strings.ToUpper(name)}[i]), nil) })
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		if err == nil {
			ok++
		} else if !errors.Is(err, deploy.ErrDuplicate) {
			t.Errorf("losing create: %v, want ErrDuplicate", err)
		}
	}
	if ok != 1 {
		t.Errorf("%d of 2 racing creates of one model name succeeded, want 1 (%v)", ok, errs)
	}
}

// TestStoreNameReservation: a store that has not seen another replica's
// create (it follows nobody) is refused the same name by Nomad's
// reservation; a reservation left by a replica that died between its two
// writes is taken over once it is older than a minute, not before.
func TestStoreNameReservation(t *testing.T) {
	needCluster(t)
	backend := testBackend(t)
	x, y := openShared(t, backend), openShared(t, backend)
	if _, err := x.Create(storeDep("Reserved.v1"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := y.Create(storeDep("reserved.V1"), nil); !errors.Is(err, deploy.ErrDuplicate) {
		t.Errorf("create of a name another store holds: %v, want ErrDuplicate", err)
	}

	// What a replica that died after reserving "orphan" leaves behind.
	orphan := &api.Variable{Path: backend.NamesPrefix + "/dev/orphan",
		Items: api.VariableItems{"deploy_id": "d-gone", "owner": "dev", "model_name": "orphan"}}
	if _, _, err := backend.Client.Variables().Create(orphan, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := y.Create(storeDep("orphan"), nil); !errors.Is(err, deploy.ErrDuplicate) {
		t.Errorf("create over a fresh reservation of a missing deployment: %v, want ErrDuplicate (it may be a create in flight)", err)
	}
	later := backend
	later.Now = func() time.Time { return time.Now().Add(2 * time.Minute) }
	if _, err := openShared(t, later).Create(storeDep("orphan"), nil); err != nil {
		t.Errorf("create over a reservation left 2 minutes ago by a deployment that does not exist: %v", err)
	}
}

// within fails t unless cond holds within a second.
func within(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 1s for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSharedStoreAPI: a thaw server and a store in this process, which
// stands for a second replica (two thaw servers would both run the fleet),
// over one Nomad: the API's create shows on the replica, and the replica's
// update and delete show in the API within a second; the replica is refused
// a model name the API's user holds, in any case.
func TestSharedStoreAPI(t *testing.T) {
	s := startServer(t, serverOpts{})
	replica := openShared(t, nomad.VariableStore{Client: nomadClient()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- replica.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	name := uniqueName("replica")
	d := s.create(name, "H100-80GB", 1, 8, 0, 1)
	var mine deploy.Deployment
	within(t, "the API's create to show on the replica", func() bool { var err error; mine, err = replica.Get(d.ID); return err == nil })
	other := storeDep(strings.ToUpper(name))
	other.Owner = mine.Owner
	if _, err := replica.Create(other, nil); !errors.Is(err, deploy.ErrDuplicate) {
		t.Errorf("create on the replica of the API's name in upper case: %v, want ErrDuplicate", err)
	}
	if _, err := replica.Update(d.ID, func(d *deploy.Deployment) { d.Settings.MaxInstances = 2 }, nil); err != nil {
		t.Fatal(err)
	}
	within(t, "the replica's update to show in the API", func() bool { return s.get(d.ID).Settings.MaxInstances == 2 })
	if err := replica.Delete(d.ID); err != nil {
		t.Fatal(err)
	}
	within(t, "the replica's delete to show in the API", func() bool {
		r, err := s.do(http.MethodGet, "/deploy/"+d.ID, nil)
		return err == nil && r.Status == http.StatusNotFound
	})
	again := s.create(name, "H100-80GB", 1, 8, 0, 1)
	s.delete(again.ID)
}
