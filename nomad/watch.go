package nomad

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/thawhq/thaw/fleet"
	"github.com/thawhq/thaw/jobs"
)

// Run adopts the jobs thaw left in Nomad, then writes jobs and watches
// Nomad's event stream until ctx is done. It returns nil then; allocations
// keep running for the next Run to adopt.
func (r *Runtime) Run(ctx context.Context) error {
	r.mu.Lock()
	if r.runCtx != nil {
		r.mu.Unlock()
		return errors.New("nomad: runtime already run")
	}
	r.runCtx = ctx
	r.mu.Unlock()
	go r.events.Pump(ctx)

	for wait := 500 * time.Millisecond; ; wait = min(2*wait, r.cfg.RetryInterval) {
		err := r.adopt(ctx)
		if err == nil {
			break
		}
		r.setWatchErr(plainErr(err))
		r.log.Warn("cannot read thaw's jobs from Nomad; retrying", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.syncLoop(ctx)
	}()
	r.watch(ctx)
	<-done
	return nil
}

// adopt reads the jobs thaw registered before (a restart): their task
// groups become orphan slots that the next Starts claim.
func (r *Runtime) adopt(ctx context.Context) error {
	q := (&api.QueryOptions{Prefix: jobs.JobPrefix}).WithContext(ctx)
	stubs, _, err := r.nc.Jobs().List(q)
	if err != nil {
		return fmt.Errorf("list jobs: %w", denied(err, needListJobs))
	}
	var found []*api.Job
	for _, st := range stubs {
		if st.Stop || st.Status == "dead" {
			continue
		}
		job, _, err := r.nc.Jobs().Info(st.ID, (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return fmt.Errorf("read job %s: %w", st.ID, denied(err, needReadJob))
		}
		found = append(found, job)
	}
	r.mu.Lock()
	n := 0
	for _, job := range found {
		deploymentID := strings.TrimPrefix(*job.ID, jobs.JobPrefix)
		d := r.deploymentLocked(deploymentID)
		d.base, d.registered = job, true
		for _, tg := range job.TaskGroups {
			if tg.Name == nil || tg.Count == nil || *tg.Count == 0 {
				continue
			}
			d.slots = append(d.slots, &slot{id: deploymentID + "/" + *tg.Name, group: *tg.Name, tg: tg, orphan: true, done: make(chan struct{})})
			n++
		}
	}
	r.ready = true
	r.watchErr = nil
	r.adoptUntil = time.Now().Add(r.cfg.AdoptGrace)
	r.mu.Unlock()
	if n > 0 {
		r.log.Info("found thaw instances in Nomad; the deployments' next starts adopt them", "jobs", len(found), "instances", n, "grace", r.cfg.AdoptGrace)
	}
	return nil
}

// topics are the event stream topics the runtime follows.
var topics = map[api.Topic][]string{api.TopicAllocation: {"*"}, api.TopicEvaluation: {"*"}}

// watch follows the event stream, resuming from the last index after a
// disconnect, with a full resync on every (re)connect and every
// ResyncInterval.
func (r *Runtime) watch(ctx context.Context) {
	var index uint64
	for wait := 250 * time.Millisecond; ctx.Err() == nil; {
		if last, err := r.resyncAll(ctx); err == nil && index == 0 {
			index = last
		}
		sctx, cancel := context.WithCancel(ctx)
		ch, err := r.nc.EventStream().Stream(sctx, topics, index, (&api.QueryOptions{}).WithContext(sctx))
		if err != nil {
			cancel()
			r.setWatchErr(fmt.Errorf("event stream: %w", denied(plainErr(err), needReadJob)))
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
			wait = min(2*wait, r.cfg.RetryInterval)
			continue
		}
		r.setWatchErr(nil)
		wait = 250 * time.Millisecond
		index = r.follow(ctx, ch, index)
		cancel()
	}
}

// follow applies events until the stream ends; it returns the last index.
func (r *Runtime) follow(ctx context.Context, ch <-chan *api.Events, index uint64) uint64 {
	resync := time.NewTicker(r.cfg.ResyncInterval)
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			return index
		case <-resync.C:
			_, _ = r.resyncAll(ctx)
		case evs, ok := <-ch:
			if !ok {
				return index
			}
			if evs.Err != nil {
				if ctx.Err() == nil {
					r.setWatchErr(fmt.Errorf("event stream: %w", plainErr(evs.Err)))
					r.log.Warn("nomad event stream ended; reconnecting", "err", evs.Err, "index", index)
				}
				return index
			}
			index = max(index, evs.Index)
			for i := range evs.Events {
				r.handle(&evs.Events[i])
			}
		}
	}
}

func (r *Runtime) handle(ev *api.Event) {
	switch ev.Topic {
	case api.TopicAllocation:
		a, err := ev.Allocation()
		if err != nil || a == nil || !strings.HasPrefix(a.JobID, jobs.JobPrefix) {
			return
		}
		r.mu.Lock()
		r.onAllocLocked(viewOfAlloc(a))
		r.mu.Unlock()
	case api.TopicEvaluation:
		e, err := ev.Evaluation()
		if err != nil || e == nil || !strings.HasPrefix(e.JobID, jobs.JobPrefix) {
			return
		}
		r.mu.Lock()
		r.onEvalLocked(e)
		r.mu.Unlock()
	}
}

func (r *Runtime) setWatchErr(err error) {
	r.mu.Lock()
	r.watchErr = err
	r.mu.Unlock()
}

// resyncAll reads every known job's evaluations and allocations; it
// returns the highest Nomad index seen.
func (r *Runtime) resyncAll(ctx context.Context) (uint64, error) {
	r.mu.Lock()
	ids := make([]string, 0, len(r.deployments))
	for id, d := range r.deployments {
		if d.registered || len(d.slots) > 0 {
			ids = append(ids, id)
		}
	}
	r.mu.Unlock()
	var last uint64
	// An index to start the stream from even with no job yet.
	if _, qm, err := r.nc.Jobs().List((&api.QueryOptions{Prefix: jobs.JobPrefix}).WithContext(ctx)); err != nil {
		return 0, denied(err, needListJobs)
	} else {
		last = qm.LastIndex
	}
	for _, id := range ids {
		if err := r.resyncJob(ctx, id); err != nil {
			return last, err
		}
	}
	return last, nil
}

// resyncJob reads one job's evaluations and allocations and applies them
// as events would.
func (r *Runtime) resyncJob(ctx context.Context, deploymentID string) error {
	jobID := jobs.JobID(deploymentID)
	q := (&api.QueryOptions{}).WithContext(ctx)
	// Nomad's index before the listings: an allocation created after it may
	// be missing from them without being gone (an event may have bound it
	// to a slot meanwhile).
	_, before, err := r.nc.Jobs().List((&api.QueryOptions{Prefix: jobID}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("read nomad index: %w", denied(err, needListJobs))
	}
	evals, _, err := r.nc.Jobs().Evaluations(jobID, q)
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("list evaluations of %s: %w", jobID, denied(err, needReadJob))
	}
	stubs, _, err := r.nc.Jobs().Allocations(jobID, true, q)
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("list allocations of %s: %w", jobID, denied(err, needReadJob))
	}
	views := make([]allocView, 0, len(stubs))
	for _, st := range stubs {
		v := viewOfStub(st)
		if v.ClientStatus == api.AllocClientStatusRunning && v.Addr == "" {
			a, _, err := r.nc.Allocations().Info(v.ID, q)
			if err != nil {
				return fmt.Errorf("read allocation %s: %w", v.ID, denied(err, needReadJob))
			}
			v = viewOfAlloc(a)
		}
		views = append(views, v)
	}
	slices.SortFunc(evals, func(a, b *api.Evaluation) int { return int(a.ModifyIndex) - int(b.ModifyIndex) })
	slices.SortFunc(views, func(a, b allocView) int { return int(a.ModifyIndex) - int(b.ModifyIndex) })

	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range evals {
		r.onEvalLocked(e)
	}
	seen := map[string]bool{}
	for _, v := range views {
		seen[v.ID] = true
		r.onAllocLocked(v)
	}
	// A bound allocation Nomad no longer knows (job purged behind thaw's
	// back, garbage collected) is over.
	if d := r.deployments[deploymentID]; d != nil {
		for _, s := range slices.Clone(d.slots) {
			if s.alloc != "" && !seen[s.alloc] && s.allocCreate <= before.LastIndex {
				r.endLocked(d, s, "Nomad no longer knows the instance's allocation")
			}
		}
	}
	return nil
}

// onAllocLocked applies an allocation's state to its slot. Idempotent and
// safe against stale views. Called with mu held.
func (r *Runtime) onAllocLocked(v allocView) {
	d := r.deployments[strings.TrimPrefix(v.JobID, jobs.JobPrefix)]
	if d == nil {
		return
	}
	s := d.slotLocked(func(s *slot) bool { return s.group == v.TaskGroup })
	if s == nil {
		return
	}
	if v.ID == s.alloc && v.ModifyIndex < s.allocIdx {
		return // older than what we applied
	}
	if v.terminal() {
		if s.alloc != "" && s.alloc != v.ID {
			return // an older allocation of the slot
		}
		s.alloc = v.ID
		if s.held.IsZero() {
			s.held = v.held()
		}
		s.released = v.released()
		r.endLocked(d, s, failReason(v))
		return
	}
	if s.alloc != "" && v.ID != s.alloc {
		if v.CreateIndex < s.allocCreate {
			return // an older allocation of the slot
		}
		if !s.removing {
			// Nomad placed a replacement in the slot's group (alloc stop,
			// node drain, preemption): the instance thaw routes to is
			// going. End it; dropping the group stops the replacement too,
			// and the fleet starts a fresh instance.
			r.endLocked(d, s, "Nomad replaced the instance's allocation "+shortID(s.alloc)+" (alloc stop, node drain or preemption)")
			return
		}
	}
	s.alloc, s.allocIdx, s.allocCreate = v.ID, v.ModifyIndex, v.CreateIndex
	if s.held.IsZero() {
		// The first allocation bound: a replacement bound while the slot
		// is removed (below) extends the holding rather than restarting it.
		s.held = v.held()
	}
	switch {
	case v.DesiredStatus != api.AllocDesiredStatusRun:
		// Nomad is stopping it; the terminal report ends the slot.
	case (v.ClientStatus == api.AllocClientStatusRunning || v.ClientStatus == api.AllocClientStatusPending) && v.Addr != "":
		// The port is known once Nomad placed the allocation: report it
		// then, so the fleet probes the model server as it starts instead
		// of waiting for the client to tell the servers "running" (0.4-0.6 s
		// later on a dev agent). The probe copes with refused connections.
		r.setLocked(d, s, fleet.PhaseRunning, v.Addr, "")
	case s.phase == fleet.PhasePending && s.reason != "":
		// Placed: no longer "not placed".
		r.setLocked(d, s, fleet.PhasePending, "", "")
	}
}

func shortID(id string) string { return id[:min(8, len(id))] }

// endLocked ends a slot whose allocation is over: stopped when thaw asked,
// failed otherwise. Called with mu held.
func (r *Runtime) endLocked(d *deploymentJob, s *slot, reason string) {
	if s.removing {
		r.finishLocked(d, s, fleet.PhaseStopped, "")
		return
	}
	r.log.Warn("instance ended in Nomad", "deploy", d.id, "instance", s.id, "alloc", s.alloc, "reason", reason)
	r.finishLocked(d, s, fleet.PhaseFailed, reason)
}

// onEvalLocked reports the placement failures of an evaluation as pending
// reasons of the slots still without an allocation. Called with mu held.
func (r *Runtime) onEvalLocked(e *api.Evaluation) {
	if len(e.FailedTGAllocs) == 0 {
		return
	}
	d := r.deployments[strings.TrimPrefix(e.JobID, jobs.JobPrefix)]
	if d == nil {
		return
	}
	for group, m := range e.FailedTGAllocs {
		s := d.slotLocked(func(s *slot) bool { return s.group == group })
		if s == nil || s.removing || s.alloc != "" || e.ModifyIndex < s.evalIdx {
			continue
		}
		s.evalIdx = e.ModifyIndex
		r.setLocked(d, s, fleet.PhasePending, "", placementReason(m, d.spec.GPU, d.spec.NumGPUs))
	}
}
