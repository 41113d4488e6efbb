package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/jobs"
)

func TestParseServerFlags(t *testing.T) {
	t.Setenv("NOMAD_ADDR", "http://nomad.example:4646")
	t.Setenv("NOMAD_TOKEN", "secret-id")
	c, err := parseServerFlags([]string{"--redis-addr", "127.0.0.1:6379", "--engine", "sim", "--data-dir", "/srv/thaw"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	got := []string{c.nomadAddr, c.nomadToken, string(c.engine), c.usersFile, c.addr}
	want := []string{"http://nomad.example:4646", "secret-id", string(jobs.EngineSim), "/srv/thaw/users", "127.0.0.1:8080"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}

	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, "--redis-addr is required"},
		{[]string{"--redis-addr", "r:1", "--engine", "tgi"}, `--engine "tgi": want vllm or sim`},
		{[]string{"--redis-addr", "r:1", "--gpu-quota", "-1"}, "must not be negative"},
		{[]string{"--redis-addr", "r:1", "extra"}, `unexpected argument "extra"`},
	} {
		if _, err := parseServerFlags(tt.args, io.Discard); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("parseServerFlags(%q) = %v, want an error containing %q", tt.args, err, tt.want)
		}
	}
}

// fakePurgeRuntime records purges; the first purge of each ID in failOnce
// fails.
type fakePurgeRuntime struct {
	inNomad []string

	mu       sync.Mutex
	failOnce map[string]bool
	purged   []string
}

func (f *fakePurgeRuntime) DeployIDs(context.Context) ([]string, error) { return f.inNomad, nil }

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
	store, err := deploy.OpenStore(filepath.Join(t.TempDir(), "deployments.json"))
	if err != nil {
		t.Fatal(err)
	}
	kept, err := store.Create(deploy.Deployment{Owner: "dev", ModelName: "kept"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	doomed, err := store.Create(deploy.Deployment{Owner: "dev", ModelName: "doomed"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rt := &fakePurgeRuntime{
		// d-gone was deleted while thaw was down.
		inNomad:  []string{kept.ID, doomed.ID, "d-gone"},
		failOnce: map[string]bool{doomed.ID: true},
	}
	fan := newFanout(store)
	p := &purger{store: store, changed: fan.purge, rt: rt, log: slog.New(slog.DiscardHandler), retry: 20 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { _ = fan.run(ctx) }()
	go func() { _ = p.run(ctx); close(done) }()

	waitUntil(t, "the job of the deployment deleted while down is purged", func() bool {
		return slices.Equal(rt.got(), []string{"d-gone"})
	})
	if err := store.Delete(doomed.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case <-fan.Changed(): // the fleet gets its signal too
	case <-time.After(time.Second):
		t.Errorf("the fleet's copy of the store signal did not arrive")
	}
	want := slices.Sorted(slices.Values([]string{"d-gone", doomed.ID}))
	waitUntil(t, "the deleted deployment is purged (after one failure)", func() bool {
		return slices.Equal(rt.got(), want)
	})
	cancel()
	<-done
	if diff := cmp.Diff(want, rt.got()); diff != "" {
		t.Errorf("purged (-want +got):\n%s", diff)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type fixedLive deploy.Live

func (f fixedLive) Live(deploy.Deployment) deploy.Live { return deploy.Live(f) }

type errRT struct{ err error }

func (e errRT) Err() error { return e.err }

func TestNomadLive(t *testing.T) {
	warm := deploy.Live{Status: deploy.StatusRunning, Instances: deploy.Instances{Running: 1, Desired: 2, Pending: 1, Reason: "1 instance(s) starting (loading weights)"}}
	got := nomadLive{fixedLive(warm), errRT{errors.New("dial tcp 127.0.0.1:4646: connection refused")}}.Live(deploy.Deployment{})
	want := warm
	want.Instances.Reason = "1 instance(s) starting (loading weights); Nomad is unreachable: running instances keep serving; scaling resumes when it returns"
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Live (-want +got):\n%s", diff)
	}
	if got := (nomadLive{fixedLive(warm), errRT{}}).Live(deploy.Deployment{}); !cmp.Equal(warm, got) {
		t.Errorf("with Nomad reachable the status changed: %+v", got)
	}
}
