package deploy_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/internal/logtest"
	"github.com/thawhq/thaw/internal/storetest"
)

var created = time.Date(2025, 5, 1, 9, 0, 0, 0, time.UTC)

func dep(owner, name string) deploy.Deployment {
	return deploy.Deployment{Owner: owner, ModelName: name, CreatedAt: created, UpdatedAt: created,
		Config:   deploy.Config{GPU: "A100-80GB", NumGPUs: 1, Weights: deploy.Weights{Repo: "org/m"}},
		Settings: deploy.Settings{MaxInstances: 1}}
}

func shared(t *testing.T, b *storetest.Shared, log *slog.Logger) *deploy.Store {
	t.Helper()
	s, err := deploy.NewSharedStore(b, log)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// run runs s.Run until the test ends.
func run(t *testing.T, s *deploy.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func pending(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestSharedStoreFollows: two stores over one backend, each running Run, as
// two thaw server replicas do: what one creates, updates or deletes shows
// on the other, whose subscribers are signalled; a change neither store
// made (a third replica's) shows on both.
func TestSharedStoreFollows(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := storetest.New()
		a, c := shared(t, b, nil), shared(t, b, nil)
		run(t, a)
		run(t, c)
		cChanged := c.Subscribe()
		synctest.Wait()
		pending(cChanged) // the first watch's state, if any

		step := func(what string, want map[string]deploy.Deployment) {
			t.Helper()
			synctest.Wait()
			if !pending(cChanged) {
				t.Errorf("%s: C's subscriber got no signal", what)
			}
			for name, s := range map[string]*deploy.Store{"A": a, "C": c} {
				got := map[string]deploy.Deployment{}
				for _, d := range s.List("") {
					got[d.ID] = d
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("%s: %s holds (-want +got):\n%s", what, name, diff)
				}
			}
		}
		d, err := a.Create(dep("alice", "m"), nil)
		if err != nil {
			t.Fatal(err)
		}
		step("create on A", map[string]deploy.Deployment{d.ID: d})
		up, err := c.Update(d.ID, func(d *deploy.Deployment) { d.Settings.MaxInstances = 4 }, nil)
		if err != nil {
			t.Fatal(err)
		}
		step("update on C", map[string]deploy.Deployment{d.ID: up})
		other := dep("bob", "n")
		other.ID = "d-other"
		b.RemoteCreate(other)
		step("create elsewhere", map[string]deploy.Deployment{d.ID: up, other.ID: other})
		b.Remote(other.ID, func(d *deploy.Deployment) { d.Settings.MinInstances = 1 })
		other.Settings.MinInstances = 1
		step("update elsewhere", map[string]deploy.Deployment{d.ID: up, other.ID: other})
		if err := a.Delete(d.ID); err != nil {
			t.Fatal(err)
		}
		step("delete on A", map[string]deploy.Deployment{other.ID: other})
		b.RemoteDelete(other.ID)
		step("delete elsewhere", map[string]deploy.Deployment{})
		if _, err := c.Create(dep("alice", "M"), nil); err != nil {
			t.Errorf("create on C of the name A deleted: %v", err)
		}
	})
}

// TestSharedStoreConflict: a store that missed another replica's change to
// a deployment (it follows nobody here) has its update and delete refused
// with ErrConflict, nothing written; it then holds the other change, and a
// retry succeeds. A change to a deployment another replica deleted is
// ErrNotFound, and the store forgets it.
func TestSharedStoreConflict(t *testing.T) {
	b := storetest.New()
	s := shared(t, b, nil)
	changed := s.Subscribe()
	d, err := s.Create(dep("alice", "m"), nil)
	if err != nil {
		t.Fatal(err)
	}
	pending(changed)
	b.Remote(d.ID, func(d *deploy.Deployment) { d.Settings.MaxInstances = 9 })
	theirs, _ := b.Read(d.ID)

	_, err = s.Update(d.ID, func(d *deploy.Deployment) { d.Settings.MinInstances = 1 }, nil)
	if !errors.Is(err, deploy.ErrConflict) {
		t.Fatalf("update after another replica's: %v, want ErrConflict", err)
	}
	if got, _ := b.Read(d.ID); !cmp.Equal(got, theirs) {
		t.Errorf("the refused update was written: %+v", got.Deployment.Settings)
	}
	if got, _ := s.Get(d.ID); !cmp.Equal(got, theirs.Deployment) {
		t.Errorf("after ErrConflict the store holds %+v, want the other replica's %+v", got.Settings, theirs.Deployment.Settings)
	}
	if !pending(changed) {
		t.Error("no signal for the change the conflict brought in")
	}
	saved, err := s.Update(d.ID, func(d *deploy.Deployment) { d.Settings.MinInstances = 1 }, nil)
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	if want := (deploy.Settings{MinInstances: 1, MaxInstances: 9}); saved.Settings != want {
		t.Errorf("retry saved %+v, want %+v: the other replica's change was lost", saved.Settings, want)
	}

	b.Remote(d.ID, func(d *deploy.Deployment) { d.Settings.MaxInstances = 2 })
	if err := s.Delete(d.ID); !errors.Is(err, deploy.ErrConflict) {
		t.Errorf("delete after another replica's update: %v, want ErrConflict", err)
	}
	if _, err := b.Read(d.ID); err != nil {
		t.Errorf("the refused delete deleted: %v", err)
	}

	b.RemoteDelete(d.ID)
	if _, err := s.Update(d.ID, func(d *deploy.Deployment) {}, nil); !errors.Is(err, deploy.ErrNotFound) {
		t.Errorf("update of a deployment another replica deleted: %v, want ErrNotFound", err)
	}
	if _, err := s.Get(d.ID); !errors.Is(err, deploy.ErrNotFound) {
		t.Errorf("the store still holds a deployment another replica deleted: %v", err)
	}
}

// TestSharedStoreDuplicateName: a name another replica holds (in any case),
// which this store has not seen yet, is refused as the store's own
// duplicates are: a *FieldError on model_name wrapping ErrDuplicate.
func TestSharedStoreDuplicateName(t *testing.T) {
	b := storetest.New()
	x, y := shared(t, b, nil), shared(t, b, nil)
	if _, err := x.Create(dep("alice", "Llama"), nil); err != nil {
		t.Fatal(err)
	}
	_, err := y.Create(dep("alice", "llama"), nil)
	fe, ok := errors.AsType[*deploy.FieldError](err)
	if !ok || fe.Field != "model_name" || !errors.Is(err, deploy.ErrDuplicate) || !strings.Contains(fe.Message, `"llama"`) {
		t.Fatalf("create of a name another replica holds: %#v, want a *FieldError on model_name wrapping ErrDuplicate", err)
	}
	if got := y.List(""); len(got) != 0 {
		t.Errorf("the refused create is in the store: %v", got)
	}
	if _, err := y.Create(dep("bob", "llama"), nil); err != nil {
		t.Errorf("another owner's llama: %v", err)
	}
}

// TestSharedStoreWatchFails: a failing watch is logged and retried, backing
// off; once it works again, the changes made meanwhile show.
func TestSharedStoreWatchFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := storetest.New()
		logs := &logtest.Buffer{}
		s := shared(t, b, slog.New(slog.NewTextHandler(logs, nil)))
		b.FailWatch(errors.New("nomad: connection refused"))
		run(t, s)
		time.Sleep(10 * time.Second) // 1 + 2 + 4 s of retries, then 8
		synctest.Wait()
		if n := strings.Count(logs.String(), "connection refused"); n != 4 {
			t.Errorf("%d retries logged in 10s, want 4 (after 0, 1, 3 and 7 s):\n%s", n, logs)
		}
		other := dep("bob", "n")
		other.ID = "d-other"
		b.RemoteCreate(other)
		b.FailWatch(nil)
		time.Sleep(8 * time.Second)
		synctest.Wait()
		if _, err := s.Get(other.ID); err != nil {
			t.Errorf("after the watch recovered: %v", err)
		}
	})
}

// TestPlainStoreRun: over a one-writer Backend Run has nothing to follow
// and returns at once.
func TestPlainStoreRun(t *testing.T) {
	s, err := deploy.OpenStore(t.TempDir() + "/deployments.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Run(context.Background()); err != nil {
		t.Errorf("Run: %v", err)
	}
}

// TestSharedStoreConcurrentCreates: many creates of one name from two
// stores at once: exactly one wins.
func TestSharedStoreConcurrentCreates(t *testing.T) {
	b := storetest.New()
	stores := []*deploy.Store{shared(t, b, nil), shared(t, b, nil)}
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := 0
	for i := range 20 {
		wg.Go(func() {
			_, err := stores[i%2].Create(dep("alice", "same"), nil)
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				won++
			} else if !errors.Is(err, deploy.ErrDuplicate) {
				t.Errorf("create: %v", err)
			}
		})
	}
	wg.Wait()
	if won != 1 {
		t.Errorf("%d creates of one name won, want 1", won)
	}
}

// TestSharedStoreMissReads: a store that has not yet followed another
// replica's create (its Run is not running here) fetches the deployment at
// once by ID and by name, reading the backend on the miss, while Get stays
// in memory (it misses); a fetch of what exists nowhere is still
// ErrNotFound, and misses in a burst read the backend once.
func TestSharedStoreMissReads(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := storetest.New()
		a, c := shared(t, b, nil), shared(t, b, nil)
		d, err := a.Create(dep("alice", "m"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Get(d.ID); !errors.Is(err, deploy.ErrNotFound) {
			t.Fatalf("Get read the backend: %v, want a miss from memory", err)
		}
		got, err := c.Fetch(d.ID)
		if err != nil || got.ID != d.ID {
			t.Fatalf("Fetch on the other store right after the create: %+v, %v", got, err)
		}
		other := dep("bob", "n")
		other.ID = "d-other"
		b.RemoteCreate(other)
		time.Sleep(time.Second) // past the least gap between reads
		if got, err := c.FetchByName("bob", "n"); err != nil || got.ID != other.ID {
			t.Fatalf("FetchByName right after a create elsewhere: %+v, %v", got, err)
		}
		time.Sleep(time.Second)
		if _, err := c.Fetch("d-nowhere"); !errors.Is(err, deploy.ErrNotFound) {
			t.Errorf("Fetch of a deployment nowhere: %v, want ErrNotFound", err)
		}
		late := dep("carol", "o")
		late.ID = "d-late"
		b.RemoteCreate(late)
		if _, err := c.Fetch("d-late"); !errors.Is(err, deploy.ErrNotFound) {
			t.Errorf("a second miss within the gap read the backend again: %v", err)
		}
	})
}
