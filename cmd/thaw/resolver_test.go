package main

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/httperr"
	"github.com/thawhq/thaw/proxy"
)

// TestResolver: the activator's lookups over the deploy store take either form
// of a model reference, and another user's deployment is as unknown as one
// that does not exist.
func TestResolver(t *testing.T) {
	store, err := deploy.OpenStore(filepath.Join(t.TempDir(), "deployments.json"))
	if err != nil {
		t.Fatal(err)
	}
	alice, err := store.Create(deploy.Deployment{Owner: "alice", ModelName: "m", Config: deploy.Config{MaxBatchSize: 4}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	bob, err := store.Create(deploy.Deployment{Owner: "bob", ModelName: "m", Config: deploy.Config{MaxBatchSize: 1}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	blocked := map[string]bool{"bob": true}
	r := resolver{store: store, blocked: func(owner string) (string, bool) { return "over the limit", blocked[owner] }}
	want := proxy.Target{DeployID: alice.ID, Model: "alice/m", MaxBatchSize: 4}
	for _, ref := range []string{"alice/m", "deploy_id:" + alice.ID} {
		got, err := r.Resolve("alice", ref)
		if err != nil {
			t.Errorf("Resolve(alice, %q): %v", ref, err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Resolve(alice, %q) (-want +got):\n%s", ref, diff)
		}
	}
	for _, ref := range []string{"bob/m", "deploy_id:" + bob.ID, "alice/nope", "deploy_id:d-nope", "m", "alice/m/x", ""} {
		if got, err := r.Resolve("alice", ref); !errors.Is(err, proxy.ErrUnknownModel) {
			t.Errorf("Resolve(alice, %q) = %+v, %v; want ErrUnknownModel", ref, got, err)
		}
	}
	// A user over their spending limit is refused with OpenAI's 429
	// insufficient_quota; another user cannot learn it (still unknown).
	var he *httperr.Error
	if _, err := r.Resolve("bob", "bob/m"); !errors.As(err, &he) || he.Status != 429 || he.Code != "insufficient_quota" {
		t.Errorf("Resolve(bob, bob/m) while bob is over his limit: %v, want 429 insufficient_quota", err)
	}
	if _, err := r.Resolve("alice", "bob/m"); !errors.Is(err, proxy.ErrUnknownModel) {
		t.Errorf("Resolve(alice, bob/m) while bob is over his limit: %v, want ErrUnknownModel", err)
	}
}
