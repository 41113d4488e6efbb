package nomad

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/thawhq/thaw/fleet"
	"github.com/thawhq/thaw/jobs"
)

// plan is one write of a deployment's job to Nomad, built under mu and
// applied without it.
type plan struct {
	d          *deploymentJob
	gen        uint64
	job        *api.Job // nil: deregister
	token      *string  // non-nil: write (or, when "", delete) the Variable
	leaving    []*slot  // removing slots whose groups this write drops
	deregister bool     // no group left and the job is registered: stop it
	registered bool     // the job runs once the write succeeds
}

// syncLoop writes dirty deployments' jobs to Nomad until ctx is done.
func (r *Runtime) syncLoop(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		case <-tick.C:
		}
		r.expireOrphans(time.Now())
		for _, p := range r.plans(time.Now()) {
			if ctx.Err() != nil {
				return
			}
			r.apply(ctx, p)
		}
	}
}

// expireOrphans stops the instances found in Nomad at start that no Start
// claimed within AdoptGrace.
func (r *Runtime) expireOrphans(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.adoptUntil.IsZero() || now.Before(r.adoptUntil) {
		return
	}
	r.adoptUntil = time.Time{}
	for _, d := range r.deployments {
		for _, s := range d.slots {
			if s.orphan && !s.removing {
				r.log.Info("stopping an instance found in Nomad that no deployment claimed", "deploy", d.id, "group", s.group, "alloc", s.alloc)
				s.removing = true
				r.touchLocked(d)
			}
		}
	}
}

// plans builds the writes due at now.
func (r *Runtime) plans(now time.Time) []plan {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []plan
	for _, d := range r.deployments {
		if !d.dirty || now.Before(d.retryAt) {
			continue
		}
		p := plan{d: d, gen: d.gen}
		var groups []*api.TaskGroup
		for _, s := range d.slots {
			if s.removing {
				p.leaving = append(p.leaving, s)
				continue
			}
			groups = append(groups, s.tg)
		}
		if len(groups) > 0 {
			var job *api.Job
			switch {
			case d.hasSpec:
				var err error
				if job, err = r.render(d.spec); err != nil {
					r.log.Error("render job", "deploy", d.id, "err", err)
					continue
				}
				if d.spec.HFToken != d.token {
					p.token = &d.spec.HFToken
				}
			case d.base != nil:
				job = d.base
			default:
				continue
			}
			job.TaskGroups = groups
			p.job, p.registered = job, true
		} else {
			p.deregister = d.registered
		}
		out = append(out, p)
	}
	return out
}

// apply performs p, then reads the job's allocations back so the slots
// that left learn whether an allocation must still end.
func (r *Runtime) apply(ctx context.Context, p plan) {
	r.applyMu.Lock()
	err := r.write(ctx, p)
	r.applyMu.Unlock()

	r.mu.Lock()
	d := p.d
	if r.deployments[d.id] != d {
		r.mu.Unlock()
		return // purged meanwhile
	}
	if err != nil {
		d.failures++
		d.retryAt = time.Now().Add(min(time.Duration(d.failures)*time.Second, r.cfg.RetryInterval))
		r.syncErr = plainErr(err)
		r.log.Warn("nomad write failed; will retry", "deploy", d.id, "err", err, "retry_at", d.retryAt.Format(time.TimeOnly))
		for _, s := range d.slots {
			if !s.removing && s.alloc == "" {
				r.setLocked(d, s, fleet.PhasePending, "", "Nomad unreachable or refused the job: "+plainErr(err).Error())
			}
		}
		r.mu.Unlock()
		return
	}
	d.failures = 0
	r.syncErr = nil
	d.registered = p.registered
	if p.token != nil {
		d.token = *p.token
	}
	if d.gen == p.gen {
		d.dirty = false
	}
	r.mu.Unlock()

	if err := r.resyncJob(ctx, d.id); err != nil {
		r.log.Warn("read allocations after write", "deploy", d.id, "err", err)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range p.leaving {
		if s.alloc == "" {
			r.finishLocked(d, s, fleet.PhaseStopped, "")
		}
	}
}

// write registers or deregisters the job, with the Variable first.
func (r *Runtime) write(ctx context.Context, p plan) error {
	q := (&api.WriteOptions{}).WithContext(ctx)
	jobID := jobs.JobID(p.d.id)
	if p.token != nil {
		path := jobs.VariablePath(p.d.id)
		if *p.token == "" {
			if _, err := r.nc.Variables().Delete(path, q); err != nil && !isNotFound(err) {
				return fmt.Errorf("delete variable %s: %w", path, denied(err, needVariable("destroy", path)))
			}
		} else if _, _, err := r.nc.Variables().Update(r.cfg.Renderer.Variable(p.d.id, *p.token), q); err != nil {
			return fmt.Errorf("write variable %s: %w", path, denied(err, needVariable("write", path)))
		}
	}
	if p.job == nil {
		if !p.deregister {
			return nil
		}
		if _, _, err := r.nc.Jobs().Deregister(jobID, false, q); err != nil && !isNotFound(err) {
			return fmt.Errorf("stop job %s: %w", jobID, denied(err, needSubmitJob))
		}
		r.log.Info("stopped job: no instance left", "job", jobID)
		return nil
	}
	if _, _, err := r.nc.Jobs().Register(p.job, q); err != nil {
		return fmt.Errorf("register job %s: %w", jobID, denied(err, needSubmitJob))
	}
	r.log.Debug("registered job", "job", jobID, "instances", len(p.job.TaskGroups))
	return nil
}
