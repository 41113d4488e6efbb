package test

import (
	"sort"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/deploy"
)

// persisted is the part of a deploy object that must survive a restart.
type persisted struct {
	ID, ModelName, GPU, Repo string
	NumGPUs, MaxBatchSize    int
	Min, Max                 int
}

func persistedOf(ds []deploy.View) []persisted {
	var out []persisted
	for _, d := range ds {
		out = append(out, persisted{
			ID: d.ID, ModelName: d.ModelName, GPU: d.Config.GPU, Repo: d.Config.Weights.Repo,
			NumGPUs: d.Config.NumGPUs, MaxBatchSize: d.Config.MaxBatchSize,
			Min: d.Settings.MinInstances, Max: d.Settings.MaxInstances,
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// twoDeployments creates a deployment kept warm (min 1) and one at zero
// on another GPU type, waits until the first runs and calls both.
func twoDeployments(t *testing.T, p *thawProc) (warm, cold string, want []persisted) {
	t.Helper()
	warm, cold = uniqueName("warm"), uniqueName("cold")
	a := p.create(t, devToken, llmRequest(warm, "A100-80GB", 1, 4, 1, 2))
	b := p.create(t, devToken, llmRequest(cold, "H100-80GB", 2, 16, 0, 1))
	p.waitDeploy(t, a.ID, 15*time.Second, "running 1 (min_instances 1)", func(d deploy.View) bool {
		return d.Instances.Running >= 1
	})
	for _, m := range []string{warm, cold} {
		if msg := checkChat(p.chat(t, "dev/"+m, 4), 4); msg != "" {
			t.Fatalf("calling %s before the restart: %s", m, msg)
		}
	}
	return warm, cold, persistedOf([]deploy.View{p.get(t, a.ID), p.get(t, b.ID)})
}

// checkRestored asserts the restarted thaw lists exactly want and serves
// both deployments.
func checkRestored(t *testing.T, p *thawProc, want []persisted, names ...string) {
	t.Helper()
	if diff := cmp.Diff(want, persistedOf(p.list(t, devToken))); diff != "" {
		t.Errorf("deployments after restart (-want +got):\n%s", diff)
	}
	for _, m := range names {
		if msg := checkChat(p.chat(t, "dev/"+m, 4), 4); msg != "" {
			t.Errorf("calling %s after the restart: %s", m, msg)
		}
	}
}

// TestPersistenceAcrossRestart: deployments (ids and settings) survive a
// SIGTERM restart on the same data dir, stay callable, and the stop leaves
// no simulator process behind.
func TestPersistenceAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	p1 := startThaw(t, thawOpts{DataDir: dir})
	warm, cold, want := twoDeployments(t, p1)

	sims := p1.noteSims()
	if len(sims) < 2 {
		t.Errorf("expected a simulator process per running instance (2) under thaw, found %v", sims)
	}
	if !p1.stop() {
		t.Errorf("thaw did not exit by itself after SIGTERM")
	}
	waitGone(t, "after SIGTERM", sims, 5*time.Second)
	waitNoSims(t, "after SIGTERM", []string{warm, cold}, time.Second)

	p2 := startThaw(t, thawOpts{DataDir: dir})
	checkRestored(t, p2, want, warm, cold)
}

// TestKill9LeavesNoOrphans: after thaw is killed with SIGKILL while
// instances run, restarting it on the same data dir leaves no simulator of
// the killed process alive and keeps the deployments.
func TestKill9LeavesNoOrphans(t *testing.T) {
	dir := t.TempDir()
	p1 := startThaw(t, thawOpts{DataDir: dir})
	warm, cold, want := twoDeployments(t, p1)
	sims := p1.noteSims()
	if len(sims) == 0 {
		t.Fatalf("no simulator process found under thaw while instances run")
	}
	t.Logf("killing thaw with %d simulator(s) running: %v", len(sims), sims)
	p1.kill9()

	p2 := startThaw(t, thawOpts{DataDir: dir})
	waitGone(t, "after kill -9 and restart", sims, 10*time.Second)
	checkRestored(t, p2, want, warm, cold)
}
