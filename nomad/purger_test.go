package nomad

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/deploy"
)

// fakePurgeRuntime records purges. The first purge of each ID in failOnce
// fails, and so do the first listFails listings.
type fakePurgeRuntime struct {
	inNomad []string

	// mu guards the fields below.
	mu        sync.Mutex
	failOnce  map[string]bool
	listFails int
	purged    []string
}

func (f *fakePurgeRuntime) DeployIDs(context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.listFails > 0 {
		f.listFails--
		return nil, errors.New("nomad unreachable")
	}
	return f.inNomad, nil
}

func (f *fakePurgeRuntime) Purge(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failOnce[id] {
		delete(f.failOnce, id)
		return errors.New("nomad unreachable")
	}
	f.purged = append(f.purged, id)
	return nil
}

func (f *fakePurgeRuntime) got() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(slices.Values(f.purged))
}

func TestPurger(t *testing.T) {
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		const retry = 10 * time.Second
		store, err := deploy.OpenStore(filepath.Join(dir, "deployments.json"))
		if err != nil {
			t.Fatal(err)
		}
		create := func(name string) deploy.Deployment {
			d, err := store.Create(deploy.Deployment{Owner: "dev", ModelName: name}, nil)
			if err != nil {
				t.Fatal(err)
			}
			return d
		}
		kept, doomed, quick := create("kept"), create("doomed"), create("quick")
		rt := &fakePurgeRuntime{
			// d-gone was deleted while thaw was down.
			inNomad:   []string{kept.ID, doomed.ID, quick.ID, "d-gone"},
			failOnce:  map[string]bool{doomed.ID: true},
			listFails: 1, // Nomad is not up yet when thaw starts
		}
		p, err := NewPurger(PurgerConfig{Store: store, Runtime: rt, Retry: retry, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { _ = p.Run(ctx); close(done) }()
		expect := func(when string, want ...string) {
			t.Helper()
			synctest.Wait()
			if diff := cmp.Diff(slices.Sorted(slices.Values(want)), rt.got()); diff != "" {
				t.Errorf("%s: purged (-want +got):\n%s", when, diff)
			}
		}

		expect("at start, Nomad unreachable")
		time.Sleep(retry)
		expect("once Nomad answers: the job of the deployment deleted while down", "d-gone")

		if err := store.Delete(quick.ID); err != nil {
			t.Fatal(err)
		}
		expect("at once after a delete", "d-gone", quick.ID)

		if err := store.Delete(doomed.ID); err != nil {
			t.Fatal(err)
		}
		expect("after a delete whose purge failed", "d-gone", quick.ID)
		time.Sleep(retry)
		expect("after the retry", "d-gone", quick.ID, doomed.ID)

		cancel()
		<-done
	})
}

func TestNewPurgerRequires(t *testing.T) {
	if _, err := NewPurger(PurgerConfig{Runtime: &fakePurgeRuntime{}}); err == nil {
		t.Error("NewPurger without a Store: no error")
	}
}
