package nomad

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/thawhq/thaw/fleet"
	"github.com/thawhq/thaw/jobs"
)

var _ fleet.History = (*Runtime)(nil)

// Ended reports when instance id freed its GPUs, from Nomad's record of
// its allocations: an instance ID is "<deploy id>/<group>", so Ended lists
// the allocations of the deployment's job (every version of it, stopped
// jobs included) and keeps those of the group. Nomad keeps terminal
// allocations until its garbage collection (by default an hour after they
// end, sooner under `nomad system gc`; a purged job's at once); after
// that, and for a group that never had an allocation, the instance is
// fleet.ErrUnknownInstance.
//
// It answers from Nomad, not from the runtime's memory, so it works for
// instances of a previous thaw run and needs no Run. ok is false while an
// allocation of the group is not terminal.
func (r *Runtime) Ended(ctx context.Context, id string) (time.Time, bool, error) {
	deploymentID, group, found := strings.Cut(id, "/")
	if !found || deploymentID == "" || group == "" {
		return time.Time{}, false, fmt.Errorf("nomad: instance %q: %w", id, fleet.ErrUnknownInstance)
	}
	jobID := jobs.JobID(deploymentID)
	stubs, _, err := r.nc.Jobs().Allocations(jobID, true, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil && !isNotFound(err) {
		return time.Time{}, false, fmt.Errorf("nomad: list allocations of %s: %w", jobID, denied(plainErr(err), needReadJob))
	}
	var views []allocView
	for _, st := range stubs {
		if st.TaskGroup == group {
			views = append(views, viewOfStub(st))
		}
	}
	at, ok, err := groupEnded(views)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("nomad: instance %s: %w", id, err)
	}
	return at, ok, nil
}

// groupEnded is when the allocations of one task group (one instance) had
// all freed their GPUs: the latest release among them. A group holds one
// allocation unless Nomad replaced it (alloc stop, node drain): GPUs were
// held until the last one ended. Not ended while one is not terminal;
// fleet.ErrUnknownInstance without any. Pure.
func groupEnded(views []allocView) (time.Time, bool, error) {
	if len(views) == 0 {
		return time.Time{}, false, fleet.ErrUnknownInstance
	}
	var last time.Time
	for _, v := range views {
		if !v.terminal() {
			return time.Time{}, false, nil
		}
		if at := v.released(); at.After(last) {
			last = at
		}
	}
	return last, true, nil
}
