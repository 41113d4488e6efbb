package localrt

import (
	"time"

	"github.com/thawhq/thaw/fleet"
)

// placeLocked places the pending instances that fit, in start order, hands
// them to the spawner, and reports a new reason for each one left pending
// whose reason changed. Called with mu held.
func (r *Runtime) placeLocked() {
	if r.closing || len(r.pending) == 0 {
		return
	}
	queue := make([]request, len(r.pending))
	for i, inst := range r.pending {
		queue[i] = request{ID: inst.id, GPU: inst.spec.GPU, N: inst.spec.NumGPUs}
	}
	d := plan(r.total, r.used, queue)
	if len(d.Place) > 0 {
		for _, id := range d.Place {
			inst := r.insts[id]
			inst.state = statePlaced
			r.used[inst.spec.GPU] += inst.spec.NumGPUs
			r.toSpawn = append(r.toSpawn, inst)
		}
		r.pending = deleteInst(r.pending, func(inst *instance) bool { return inst.state != statePending })
		select {
		case r.spawnSig <- struct{}{}:
		default:
		}
	}
	for _, inst := range r.pending {
		reason := d.Reasons[inst.id]
		if reason == inst.reason {
			continue
		}
		inst.reason = reason
		r.log.Info("instance pending", "instance", inst.id, "deploy", inst.spec.DeployID, "reason", reason)
		r.emitLocked(inst, fleet.PhasePending, reason)
	}
}

// finishLocked releases inst's GPUs and port, forgets it, and reports its
// last phase. The caller then calls placeLocked, as GPUs may have freed.
// Called with mu held.
func (r *Runtime) finishLocked(inst *instance, phase fleet.Phase, reason string) {
	if inst.gone {
		return
	}
	inst.gone = true
	switch inst.state {
	case statePending:
		r.pending = deleteInst(r.pending, func(i *instance) bool { return i == inst })
	case statePlaced:
		r.toSpawn = deleteInst(r.toSpawn, func(i *instance) bool { return i == inst })
	}
	if inst.state != statePending {
		r.used[inst.spec.GPU] -= inst.spec.NumGPUs
	}
	if inst.port != 0 {
		delete(r.ports, inst.port)
	}
	if inst.killer != nil {
		inst.killer.Stop()
	}
	delete(r.insts, inst.id)
	if !inst.held.IsZero() {
		r.ended[inst.id] = ended{ID: inst.id, DeployID: inst.spec.DeployID, Held: inst.held, Released: inst.released, How: endExit}
		if len(r.ended) > 2*endedMax {
			r.pruneEndedLocked(time.Now())
		}
	}
	r.emitLocked(inst, phase, reason)
	close(inst.done)
}

// emitLocked reports inst in phase, with when its process started (Held,
// on every report from PhaseRunning on) and exited (Released, on the last
// one). Called with mu held, so that reports keep the order of the changes
// they report.
func (r *Runtime) emitLocked(inst *instance, phase fleet.Phase, reason string) {
	r.events.Push(fleet.Instance{
		ID:       inst.id,
		DeployID: inst.spec.DeployID,
		Phase:    phase,
		Addr:     inst.addr,
		Reason:   reason,
		Held:     inst.held,
		Released: inst.released,
	})
}

// deleteInst removes the instances for which del is true from s.
func deleteInst(s []*instance, del func(*instance) bool) []*instance {
	out := s[:0]
	for _, inst := range s {
		if !del(inst) {
			out = append(out, inst)
		}
	}
	clear(s[len(out):])
	return out
}
