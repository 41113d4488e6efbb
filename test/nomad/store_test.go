package nomadtest

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/nomad"
)

// TestVariableStore: deployments kept in Nomad Variables survive a new
// Store (a restarted thaw server), and deletes stick.
func TestVariableStore(t *testing.T) {
	needCluster(t)
	backend := nomad.VariableStore{Client: nomadClient(), Prefix: "thaw/test-records-" + time.Now().Format("150405000")}
	s, err := deploy.NewStore(backend)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	mk := func(name string) deploy.Deployment {
		return deploy.Deployment{Owner: "dev", ModelName: name, CreatedAt: now, UpdatedAt: now, HFToken: "hf_secret",
			Config:   deploy.Config{GPU: "H100-80GB", NumGPUs: 2, MaxBatchSize: 8, Weights: deploy.Weights{Repo: "org/m"}},
			Settings: deploy.Settings{MinInstances: 0, MaxInstances: 3}}
	}
	a, err := s.Create(mk("a"), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Create(mk("b"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(a.ID, func(d *deploy.Deployment) { d.Settings.MaxInstances = 5 }, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(b.ID); err != nil {
		t.Fatal(err)
	}

	again, err := deploy.NewStore(backend)
	if err != nil {
		t.Fatal(err)
	}
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
}
