package nomad

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/thawhq/thaw/fleet"
	"github.com/thawhq/thaw/jobs"
)

// purgeStopWait bounds how long Purge waits for the stopped job's
// allocations to end before it purges anyway (their ends then go
// unrecorded). Model servers exit within seconds of Nomad's SIGINT; it
// leaves the purge itself time within the Purger's DefaultPurgeTimeout.
const purgeStopWait = 20 * time.Second

// Purge stops and purges the deployment's job and deletes its Variable
// (the HF token). Call it once the deployment is deleted; instances still
// known are reported stopped.
//
// The job is stopped first and purged once its allocations are over (or
// ctx ends): Nomad forgets a purged job's allocations at once, before they
// have even stopped, so purging first would lose the record of when the
// GPUs were freed. The stopped instances are reported with that time
// (Released), and as stopped only once their GPUs are free, as Stop does.
func (r *Runtime) Purge(ctx context.Context, deployID string) error {
	jobID := jobs.JobID(deployID)
	q := (&api.WriteOptions{}).WithContext(ctx)
	// Detached from the runtime under applyMu, no sync writes the job
	// again: a sync in flight has finished, later ones do not see it.
	r.applyMu.Lock()
	r.mu.Lock()
	d := r.deployments[deployID]
	delete(r.deployments, deployID)
	r.mu.Unlock()
	_, _, err := r.nc.Jobs().Deregister(jobID, false, q)
	r.applyMu.Unlock()
	var ends map[string]time.Time
	if err == nil {
		wctx, cancel := context.WithTimeout(ctx, purgeStopWait)
		ends = r.awaitEnds(wctx, jobID)
		cancel()
	}
	if d != nil {
		r.mu.Lock()
		for _, s := range slices.Clone(d.slots) {
			if at, ok := ends[s.group]; ok && s.released.IsZero() && !s.held.IsZero() {
				s.released = at
			}
			s.removing = true // leaving: no sync of the detached job
			r.finishLocked(d, s, fleet.PhaseStopped, "")
		}
		r.mu.Unlock()
	}
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("nomad: stop job %s: %w", jobID, denied(err, needSubmitJob))
	}

	var errs []error
	if _, _, err := r.nc.Jobs().Deregister(jobID, true, q); err != nil && !isNotFound(err) {
		errs = append(errs, fmt.Errorf("purge job %s: %w", jobID, denied(err, needSubmitJob)))
	}
	path := jobs.VariablePath(deployID)
	if _, err := r.nc.Variables().Delete(path, q); err != nil && !isNotFound(err) {
		errs = append(errs, fmt.Errorf("delete variable %s: %w", path, denied(err, needVariable("destroy", path))))
	}
	if len(errs) > 0 {
		return fmt.Errorf("nomad: %w", errors.Join(errs...))
	}
	r.log.Info("purged deployment's Nomad job and variable", "deploy", deployID)
	return nil
}

// awaitEnds waits (blocking queries) until every allocation of the stopped
// job jobID is over, and returns when each task group freed its GPUs
// (groupEnded). It returns what it knows when ctx ends or Nomad fails: the
// groups not over yet are missing.
func (r *Runtime) awaitEnds(ctx context.Context, jobID string) map[string]time.Time {
	var index uint64
	for {
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: 5 * time.Second}).WithContext(ctx)
		stubs, meta, err := r.nc.Jobs().Allocations(jobID, true, q)
		if err != nil {
			if ctx.Err() == nil && !isNotFound(err) {
				r.log.Warn("purge: allocations of the stopped job unavailable; purging without their end times", "job", jobID, "err", denied(plainErr(err), needReadJob))
			}
			return nil
		}
		groups := map[string][]allocView{}
		for _, st := range stubs {
			groups[st.TaskGroup] = append(groups[st.TaskGroup], viewOfStub(st))
		}
		ends := map[string]time.Time{}
		for g, views := range groups {
			if at, ok, _ := groupEnded(views); ok {
				ends[g] = at
			}
		}
		if len(ends) == len(groups) || ctx.Err() != nil {
			return ends
		}
		index = meta.LastIndex
	}
}

// DeployIDs lists the deployments that have a thaw job in Nomad, running
// or stopped: what a caller compares with its store to Purge the jobs of
// deployments deleted while thaw was down.
func (r *Runtime) DeployIDs(ctx context.Context) ([]string, error) {
	stubs, _, err := r.nc.Jobs().List((&api.QueryOptions{Prefix: jobs.JobPrefix}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("nomad: list jobs: %w", denied(err, needListJobs))
	}
	out := make([]string, 0, len(stubs))
	for _, st := range stubs {
		out = append(out, strings.TrimPrefix(st.ID, jobs.JobPrefix))
	}
	return out, nil
}

// plainErr shortens a transport error (`Get "http://nomad:4646/v1/...":
// dial tcp ...: connection refused`) to its cause, for the deploy API;
// the operation stays in the wrapping error's text.
func plainErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr == nil {
			return fmt.Errorf("%s %s: %w", ue.Op, u.Host, ue.Err)
		}
		return ue.Err
	}
	return err
}

// isNotFound reports a 404 from Nomad.
func isNotFound(err error) bool {
	if s := statusOf(err); s != 0 {
		return s == http.StatusNotFound
	}
	return strings.Contains(err.Error(), "404") || strings.Contains(err.Error(), "not found")
}
