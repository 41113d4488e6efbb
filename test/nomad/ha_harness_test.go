package nomadtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/thawhq/thaw/client"
	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/test/e2e"
)

// haCluster is scripts/cluster.sh (`make cluster`) with its two thaw server
// replicas, as the HA tests drive it.
type haCluster struct {
	*e2e.Cluster
	t     *testing.T
	nomad *api.Client // the cluster's own Nomad agent
}

// startHA starts make cluster with args for both replicas, stopped when
// the test ends.
func startHA(t *testing.T, args ...string) *haCluster {
	t.Helper()
	needCluster(t)
	c := e2e.StartClusterT(t, e2e.ClusterConfig{Bin: thawBin, Dir: t.TempDir(), Args: args})
	if len(c.Replicas) != 2 {
		t.Fatalf("make cluster runs %d thaw server replicas, want 2:\n%s", len(c.Replicas), c.Out.Tail(8<<10))
	}
	nc, err := api.NewClient(&api.Config{Address: fmt.Sprintf("http://127.0.0.1:%d", c.NomadPort)})
	if err != nil {
		t.Fatal(err)
	}
	return &haCluster{Cluster: c, t: t, nomad: nc}
}

// api is the deploy API of the replica at base, as user dev.
func (h *haCluster) api(base string) *client.Client {
	return &client.Client{BaseURL: base, Token: h.Token, HTTP: httpClient}
}

// roles waits until one replica leads and the other follows it, and
// returns their indexes in Replicas and the leader's ID.
func (h *haCluster) roles(timeout time.Duration) (leader, follower int, id string) {
	h.t.Helper()
	var seen [2]e2e.Health
	var errs [2]error
	ok := waitFor(timeout, 100*time.Millisecond, func() bool {
		for i, r := range h.Replicas {
			seen[i], errs[i] = e2e.GetHealth(h.t.Context(), r.API)
		}
		for i := range 2 {
			l, f := seen[i], seen[1-i]
			if errs[0] == nil && errs[1] == nil && l.Role == e2e.RoleLeader && f.Role == e2e.RoleFollower &&
				l.Leader != "" && f.Leader == l.Leader {
				leader, follower, id = i, 1-i, l.Leader
				return true
			}
		}
		return false
	})
	if !ok {
		h.t.Fatalf("no replica led with the other following it within %s: /healthz says %+v (%v), %+v (%v)",
			timeout, seen[0], errs[0], seen[1], errs[1])
	}
	return leader, follower, id
}

// waitRole polls the replica at base every 50 ms until its /healthz says
// role (following leaderID, when role is follower and leaderID is not
// ""), for timeout at most, and returns how long that took since from.
func (h *haCluster) waitRole(base, role, leaderID string, from time.Time, timeout time.Duration) (time.Duration, error) {
	var last e2e.Health
	var err error
	ok := waitFor(timeout, 50*time.Millisecond, func() bool {
		last, err = e2e.GetHealth(h.t.Context(), base)
		return err == nil && last.Role == role && (role == e2e.RoleLeader || leaderID == "" || last.Leader == leaderID)
	})
	if !ok {
		return 0, fmt.Errorf("%s not %s within %s: /healthz says %+v (%v)", base, role, timeout, last, err)
	}
	return time.Since(from), nil
}

// haCreate is a create request for a deployment of one A100 whose model
// server takes up to 4 requests at once.
func haCreate(name string, minInst, maxInst int) deploy.CreateRequest {
	one, batch := 1, 4
	return deploy.CreateRequest{ModelName: name, GPU: "A100-80GB", NumGPUs: &one, MaxBatchSize: &batch,
		HF:       &deploy.HF{Repo: "org/model", Token: "hf_e2e_secret"},
		Settings: &deploy.Settings{MinInstances: minInst, MaxInstances: maxInst}}
}

// apiStatus is the HTTP status of a deploy API client's error (0 when err
// is not an answer).
func apiStatus(err error) int {
	if e, ok := errors.AsType[*client.Error](err); ok {
		return e.Status
	}
	return 0
}

// waitRoutable waits until Envoy routes d to the activators and both
// activators know d (they learn it through Redis from the leader), so a
// request sent now is held, not refused as an unknown model.
func (h *haCluster) waitRoutable(d deploy.View) {
	h.t.Helper()
	acts := clusterActivators.FindStringSubmatch(h.Out.Tail(64 << 10))
	if acts == nil {
		h.t.Fatalf("cluster.sh did not say where the activators listen")
	}
	ok := waitFor(30*time.Second, 100*time.Millisecond, func() bool {
		hosts, _ := envoyHosts(h.EnvoyAdmin, "deploy-"+d.ID, "priority")
		if len(hosts) == 0 {
			return false
		}
		for _, port := range strings.Fields(acts[1]) {
			var models struct {
				Data []struct{ ID string } `json:"data"`
			}
			r, err := (&server{t: h.t, base: "http://127.0.0.1:" + port}).doAs(h.Token, "GET", "/v1/openai/models", nil)
			if err != nil || r.Status != http.StatusOK || json.Unmarshal(r.Body, &models) != nil ||
				!slices.ContainsFunc(models.Data, func(m struct{ ID string }) bool { return m.ID == d.FullName }) {
				return false
			}
		}
		return true
	})
	if !ok {
		h.t.Fatalf("deployment %s not routable through Envoy and the activators within 30s", d.FullName)
	}
}

// liveAllocs returns the IDs of job's running or pending allocations,
// sorted.
func (h *haCluster) liveAllocs(job string) []string {
	h.t.Helper()
	ids, _, err := liveAllocsOf(h.nomad, job)
	if err != nil {
		h.t.Fatalf("allocations of %s: %v", job, err)
	}
	return ids
}

// liveAllocsOf returns the IDs of job's running or pending allocations,
// sorted, and a description of each.
func liveAllocsOf(nc *api.Client, job string) (ids, desc []string, err error) {
	allocs, _, err := nc.Jobs().Allocations(job, false, nil)
	if err != nil {
		return nil, nil, err
	}
	for _, a := range allocs {
		if a.ClientStatus == api.AllocClientStatusRunning || a.ClientStatus == api.AllocClientStatusPending {
			ids = append(ids, a.ID)
			desc = append(desc, fmt.Sprintf("%s %s/%s", a.ID[:8], a.ClientStatus, a.DesiredStatus))
		}
	}
	slices.Sort(ids)
	return ids, desc, nil
}

// watchAllocs polls Nomad every 200 ms for job's running or pending
// allocations until stop is called, which returns the most seen at once
// and each sighting of more than limit.
func (h *haCluster) watchAllocs(job string, limit int) (stop func() (most int, over []string)) {
	ctx, cancel := context.WithCancel(h.t.Context())
	var most int
	var over, errs []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			ids, desc, err := liveAllocsOf(h.nomad, job)
			switch {
			case err != nil && !strings.Contains(err.Error(), "404"):
				errs = append(errs, err.Error())
			case len(ids) > limit:
				over = append(over, fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), desc))
			}
			most = max(most, len(ids))
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return func() (int, []string) {
		cancel()
		<-done
		if len(errs) > 0 {
			h.t.Logf("%d of the polls of Nomad failed, e.g. %s", len(errs), errs[0])
		}
		return most, over
	}
}

// checkAdopted fails the test unless each allocation in ids still runs,
// meant to (not stopped by the new leader).
func (h *haCluster) checkAdopted(job string, ids []string) {
	h.t.Helper()
	for _, id := range ids {
		a, _, err := h.nomad.Allocations().Info(id, nil)
		if err != nil {
			h.t.Errorf("allocation %s of %s: %v", id[:8], job, err)
			continue
		}
		if a.ClientStatus != api.AllocClientStatusRunning || a.DesiredStatus != api.AllocDesiredStatusRun {
			h.t.Errorf("allocation %s, live when the leader changed, is now %s/%s: the new leader did not adopt it",
				id[:8], a.ClientStatus, a.DesiredStatus)
		}
	}
}
