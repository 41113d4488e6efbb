package nomad

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/thawhq/thaw/deploy"
)

// denyingNomad answers every call 403 with body, as Nomad does for a token
// whose policy lacks the capability ("Permission denied") or a token it
// does not know ("ACL token not found").
func denyingNomad(t *testing.T, body string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, body, http.StatusForbidden)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestPermissionDenied: each call Nomad refuses says which grant of thaw's
// policy it needs, in the policy's own words.
func TestPermissionDenied(t *testing.T) {
	ctx := context.Background()
	r := runtimeAt(t, denyingNomad(t, api.PermissionDeniedErrorContent))
	store := VariableStore{Client: r.nc}
	job := &api.Job{ID: new("thaw-d-1")}
	for _, tt := range []struct {
		name string
		call func() error
		need string
	}{
		{"GPUs", func() error { _, err := r.GPUs(ctx); return err }, `node policy "read"`},
		{"DeployIDs", func() error { _, err := r.DeployIDs(ctx); return err }, `namespace capability "list-jobs"`},
		{"Ended", func() error { _, _, err := r.Ended(ctx, "d-1/i-1"); return err }, `namespace capability "read-job"`},
		{"adopt", func() error { return r.adopt(ctx) }, `namespace capability "list-jobs"`},
		{"resync", func() error { return r.resyncJob(ctx, "d-1") }, `namespace capability "list-jobs"`},
		{"Purge", func() error { return r.Purge(ctx, "d-1") }, `namespace capability "submit-job"`},
		{"write the token", func() error {
			return r.write(ctx, plan{d: &deploymentJob{id: "d-1"}, token: new("hf_x"), job: job, registered: true})
		}, `variables capability "write" on nomad/jobs/thaw-d-1`},
		{"delete the token", func() error {
			return r.write(ctx, plan{d: &deploymentJob{id: "d-1"}, token: new("")})
		}, `variables capability "destroy" on nomad/jobs/thaw-d-1`},
		{"register", func() error {
			return r.write(ctx, plan{d: &deploymentJob{id: "d-1"}, job: job, registered: true})
		}, `namespace capability "submit-job"`},
		{"stop", func() error {
			return r.write(ctx, plan{d: &deploymentJob{id: "d-1"}, deregister: true})
		}, `namespace capability "submit-job"`},
		{"store load", func() error { _, err := store.Load(); return err }, `variables capability "list" on thaw/records/*`},
		{"store read", func() error { _, err := store.Read("d-1"); return err }, `variables capability "read" on thaw/records/*`},
		{"store watch", func() error { _, _, err := store.Watch(ctx, 7); return err }, `variables capability "list" on thaw/records/*`},
		{"store create", func() error {
			_, err := store.Create(deploy.Deployment{ID: "d-1", Owner: "o", ModelName: "m"})
			return err
		},
			`variables capability "write" on thaw/names/*`},
		{"store update", func() error { _, err := store.Update(deploy.Deployment{ID: "d-1"}, 3); return err }, `variables capability "write" on thaw/records/*`},
		{"store delete", func() error { return store.Delete(deploy.Deployment{ID: "d-1"}, 3) }, `variables capability "destroy" on thaw/records/*`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			var pe *PermissionError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v, want a *PermissionError", err)
			}
			if pe.Need != tt.need {
				t.Errorf("Need = %q, want %q", pe.Need, tt.need)
			}
			want := "Nomad refuses thaw's ACL token: its policy needs " + tt.need + " (Unexpected response code: 403 (Permission denied))"
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		})
	}
}

// TestUnknownToken: a token Nomad does not know is said so, not blamed on
// a missing capability.
func TestUnknownToken(t *testing.T) {
	r := runtimeAt(t, denyingNomad(t, "ACL token not found"))
	_, err := r.DeployIDs(context.Background())
	var pe *PermissionError
	if !errors.As(err, &pe) {
		t.Fatalf("error %v, want a *PermissionError", err)
	}
	if got, want := pe.Problem(), "Nomad does not know thaw's ACL token (thaw server --nomad-token)"; got != want {
		t.Errorf("Problem() = %q, want %q", got, want)
	}
}

// TestDeniedWriteShows: a sync Nomad refuses leaves the instance pending
// with the missing grant as its reason, and the deploy API's status says
// what the token lacks rather than "Nomad is unreachable".
func TestDeniedWriteShows(t *testing.T) {
	r := runtimeAt(t, denyingNomad(t, api.PermissionDeniedErrorContent))
	r.ready = true
	spec := testSpec()
	spec.HFToken = "hf_x"
	if _, err := r.Start(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	for _, p := range r.plans(time.Now()) {
		r.apply(context.Background(), p)
	}
	need := `variables capability "write" on nomad/jobs/thaw-d-1`
	var pe *PermissionError
	if err := r.Err(); !errors.As(err, &pe) || pe.Need != need {
		t.Fatalf("Err() = %v, want a *PermissionError needing %s", err, need)
	}
	got := reports(r)
	if len(got) == 0 || !strings.Contains(got[len(got)-1].Reason, "its policy needs "+need) {
		t.Errorf("reports %+v: the last one's reason does not name the missing grant", got)
	}
	live := Live{Fleet: fixedLive(deploy.Live{Status: deploy.StatusDeploying}), Runtime: r}.Live(deploy.Deployment{})
	want := "Nomad refuses thaw's ACL token: its policy needs " + need + ": scaling waits until the operator grants it"
	if live.Instances.Reason != want {
		t.Errorf("instances.reason = %q, want %q", live.Instances.Reason, want)
	}
	// The fleet's reason, from the pending instance, says it already: once.
	pending := deploy.Live{Status: deploy.StatusDeploying, Instances: deploy.Instances{Pending: 1, Reason: "1 instance(s) not placed: " + got[len(got)-1].Reason}}
	live = Live{Fleet: fixedLive(pending), Runtime: r}.Live(deploy.Deployment{})
	if live.Instances.Reason != pending.Instances.Reason {
		t.Errorf("instances.reason = %q, want the fleet's %q alone", live.Instances.Reason, pending.Instances.Reason)
	}
}
