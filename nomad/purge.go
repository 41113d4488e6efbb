package nomad

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/hashicorp/nomad/api"

	"github.com/thawhq/thaw/fleet"
	"github.com/thawhq/thaw/jobs"
)

// Purge stops and purges the deployment's job and deletes its Variable
// (the HF token). Call it once the deployment is deleted; instances still
// known are reported stopped.
func (r *Runtime) Purge(ctx context.Context, deployID string) error {
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	r.mu.Lock()
	if d := r.deployments[deployID]; d != nil {
		for _, s := range slices.Clone(d.slots) {
			r.finishLocked(d, s, fleet.PhaseStopped, "")
		}
		delete(r.deployments, deployID)
	}
	r.mu.Unlock()
	q := (&api.WriteOptions{}).WithContext(ctx)
	var errs []error
	if _, _, err := r.nc.Jobs().Deregister(jobs.JobID(deployID), true, q); err != nil && !isNotFound(err) {
		errs = append(errs, fmt.Errorf("purge job %s: %w", jobs.JobID(deployID), err))
	}
	if _, err := r.nc.Variables().Delete(r.cfg.Renderer.VariablePath(deployID), q); err != nil && !isNotFound(err) {
		errs = append(errs, fmt.Errorf("delete variable %s: %w", r.cfg.Renderer.VariablePath(deployID), err))
	}
	if len(errs) > 0 {
		return fmt.Errorf("nomad: %w", errors.Join(errs...))
	}
	r.log.Info("purged deployment's Nomad job and variable", "deploy", deployID)
	return nil
}

// DeployIDs lists the deployments that have a thaw job in Nomad, running
// or stopped: what a caller compares with its store to Purge the jobs of
// deployments deleted while thaw was down.
func (r *Runtime) DeployIDs(ctx context.Context) ([]string, error) {
	stubs, _, err := r.nc.Jobs().List((&api.QueryOptions{Prefix: jobs.JobPrefix}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("nomad: list jobs: %w", err)
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
	var ue api.UnexpectedResponseError
	if errors.As(err, &ue) {
		return ue.StatusCode() == 404
	}
	var uep *api.UnexpectedResponseError
	if errors.As(err, &uep) {
		return uep.StatusCode() == 404
	}
	return strings.Contains(err.Error(), "404") || strings.Contains(err.Error(), "not found")
}
