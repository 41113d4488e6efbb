package localrt

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/thawhq/thaw/fleet"
)

// Ended reports when instance id's process exited, freeing its GPUs. ok is
// false while the instance is not gone (running, or pending: no GPU held
// yet). Instances of a previous run are answered from the state file,
// kept a week: those whose exit that run saw; those that died with it when
// it was killed, at its last heartbeat (at most Config.Heartbeat early);
// and those that outlived it, killed by this Run, when it killed them. An
// instance that never started a process held no GPU and, once gone, is
// fleet.ErrUnknownInstance, as is one this runtime has no record of.
//
// Ended waits until Run has read the state file, or ctx is done.
func (r *Runtime) Ended(ctx context.Context, id string) (time.Time, bool, error) {
	select {
	case <-r.recovered:
	case <-ctx.Done():
		return time.Time{}, false, fmt.Errorf("localrt: instance %s: waiting for Run to read the state file: %w", id, ctx.Err())
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.insts[id] != nil {
		return time.Time{}, false, nil
	}
	if e, ok := r.ended[id]; ok {
		return e.Released, true, nil
	}
	return time.Time{}, false, fmt.Errorf("localrt: instance %s: %w", id, fleet.ErrUnknownInstance)
}

// recover closes the children that the previous run recorded (see
// recoverState) and loads its ended instances, then writes them and the
// state file without children. Called by Run before it starts any child.
func (r *Runtime) recover() {
	ends, killed, err := recoverState(r.statePath, r.endedPath, func() time.Time { return time.Now().Round(0) })
	if err != nil {
		r.log.Warn("reading the record of a previous run's model servers", "err", err)
	}
	for _, rec := range killed {
		r.log.Warn("killed model server left by a previous run", "instance", rec.ID, "pid", rec.PID)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range ends {
		if e.How == endHeartbeat {
			r.log.Warn("model server died with the previous run; closed at its last heartbeat",
				"instance", e.ID, "deploy", e.DeployID, "released", e.Released)
		}
		r.ended[e.ID] = e
	}
	r.writeEndedLocked()
	r.writeStateLocked()
}

// heartbeat rewrites the state file every Config.Heartbeat while children
// run, until quit is closed, so that a run that is killed leaves when its
// children were last known alive.
func (r *Runtime) heartbeat(quit <-chan struct{}) {
	if r.statePath == "" {
		return
	}
	tick := time.NewTicker(r.cfg.Heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-quit:
			return
		case <-tick.C:
		}
		r.mu.Lock()
		for _, inst := range r.insts {
			if inst.state == stateRunning {
				r.writeStateLocked()
				break
			}
		}
		r.mu.Unlock()
	}
}

// pruneEndedLocked drops the ended instances past their retention and
// returns those kept, sorted by Released. Called with mu held.
func (r *Runtime) pruneEndedLocked(now time.Time) []ended {
	kept := prune(slices.Collect(maps.Values(r.ended)), now)
	if len(kept) < len(r.ended) {
		clear(r.ended)
		for _, e := range kept {
			r.ended[e.ID] = e
		}
	}
	return kept
}
