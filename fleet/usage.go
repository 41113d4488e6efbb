package fleet

// GPU-time facts: what the fleet tells the meter about each instance.

import (
	"cmp"
	"time"
)

// UsageKind is what a Usage fact says happened to an instance's GPUs.
type UsageKind string

// Usage kinds, in the order an instance goes through them.
const (
	// UsageHeld: the runtime placed the instance and took its GPUs. It is
	// reported again after a restart of thaw, when the runtime re-reports
	// an instance it kept running (adoption), with the runtime's original
	// time: the receiver ignores the duplicate.
	UsageHeld UsageKind = "held"
	// UsageReady: the model server passed the readiness probe and the
	// warm-up; from then on it serves. Until then it was loading.
	UsageReady UsageKind = "ready"
	// UsageReleased: the instance ended and the runtime freed its GPUs.
	// Reason says how.
	UsageReleased UsageKind = "released"
)

// Usage is one GPU-time fact about one instance, for the meter.
type Usage struct {
	InstanceID, DeployID, Owner string
	// Model is the name the model server serves: "<owner>/<model_name>".
	Model   string
	GPU     string // GPU type, e.g. "A100-80GB"
	NumGPUs int
	Kind    UsageKind
	// At is when it happened: for UsageHeld and UsageReleased the
	// runtime's own record (Instance.Held, Instance.Released), or the
	// fleet's clock when the runtime left it zero; for UsageReady the
	// fleet's clock.
	At time.Time
	// Reason, for UsageReleased, is how the instance ended: "stopped" (the
	// fleet stopped it: scale-down, deletion), "failed: <the runtime's
	// reason>", or "start timeout: not ready within <StartTimeout>".
	Reason string
}

// Released reasons the fleet gives for the stops it asks.
const (
	releasedStopped = "stopped"
	releasedFailed  = "failed"
)

// metered is the fleet's record of one instance's GPU time, kept from
// Runtime.Start until the runtime reports the instance over (even when its
// deployment was deleted meanwhile). Guarded by Fleet.mu.
type metered struct {
	fact Usage // the instance's identity; Kind, At and Reason are set per fact
	held bool  // UsageHeld was emitted, dated heldAt
	// asked is when the fleet asked the runtime for the instance.
	asked, heldAt time.Time
	// stopReason is set when the fleet asked the stop: the reason of the
	// UsageReleased fact, whatever phase the runtime ends the instance in.
	stopReason string
}

// meterLocked starts the record of instance id of spec, asked at now.
// Called with mu held.
func (f *Fleet) meterLocked(id string, spec Spec, now time.Time) {
	f.meters[id] = &metered{asked: now, fact: Usage{
		InstanceID: id, DeployID: spec.DeployID, Owner: spec.Owner,
		Model: spec.Model, GPU: spec.GPU, NumGPUs: spec.NumGPUs,
	}}
}

// adoptSkew is how much earlier than the fleet asked for an instance the
// runtime may date its placement (clocks differ) before the instance counts
// as adopted: one that ran before this fleet started.
const adoptSkew = 10 * time.Second

// adopted reports whether the instance was placed before the fleet asked
// for it: a thaw restart found it running.
func (m *metered) adopted() bool { return m.heldAt.Before(m.asked.Add(-adoptSkew)) }

// heldLocked reports that the instance took its GPUs at at: a usage fact
// and an EventPlaced. Called with mu held.
func (f *Fleet) heldLocked(m *metered, at time.Time) {
	m.held, m.heldAt = true, at
	f.emitLocked(m.fact, UsageHeld, at, "")
	f.eventLocked(m.event(EventPlaced, at, ""))
}

// event is an event of kind about the instance of m.
func (m *metered) event(kind EventKind, at time.Time, reason string) Event {
	return Event{Kind: kind, DeployID: m.fact.DeployID, Owner: m.fact.Owner, InstanceID: m.fact.InstanceID,
		At: at, Reason: reason, Adopted: m.held && m.adopted()}
}

// stoppingLocked records why the fleet stops id; the first reason given
// stands. Called with mu held.
func (f *Fleet) stoppingLocked(id, reason string) {
	if m := f.meters[id]; m != nil && m.stopReason == "" {
		m.stopReason = reason
	}
}

// meterEventLocked turns the runtime's report ev, received at now, into
// facts: UsageHeld the first time the instance runs, UsageReleased once
// when it ends after holding GPUs. Called with mu held.
func (f *Fleet) meterEventLocked(ev Instance, now time.Time) {
	m := f.meters[ev.ID]
	if m == nil {
		return
	}
	switch ev.Phase {
	case PhaseRunning:
		if !m.held {
			f.heldLocked(m, orNow(ev.Held, now))
		}
	case PhaseFailed, PhaseStopped:
		delete(f.meters, ev.ID)
		if !m.held && !ev.Held.IsZero() {
			// It ran, but its running report never reached the fleet.
			f.heldLocked(m, ev.Held)
		}
		// A failure is the runtime's news only when the fleet did not
		// ask the stop; else it is how the stop it asked ended.
		failed := ev.Phase == PhaseFailed && m.stopReason == ""
		if failed {
			f.eventLocked(m.event(EventFailed, orNow(ev.Released, now), cmp.Or(ev.Reason, releasedFailed)))
		}
		if !m.held {
			return // never placed: it held no GPU
		}
		reason := m.stopReason
		switch {
		case reason != "":
		case ev.Phase == PhaseFailed && ev.Reason != "":
			reason = releasedFailed + ": " + ev.Reason
		case ev.Phase == PhaseFailed:
			reason = releasedFailed
		default:
			reason = releasedStopped
		}
		f.emitLocked(m.fact, UsageReleased, orNow(ev.Released, now), reason)
		if !failed {
			f.eventLocked(m.event(EventStopped, orNow(ev.Released, now), reason))
		}
	}
}

// meterReadyLocked reports that instance id became ready at now. Called
// with mu held.
func (f *Fleet) meterReadyLocked(id string, now time.Time) {
	if m := f.meters[id]; m != nil && m.held {
		f.emitLocked(m.fact, UsageReady, now, "")
		e := m.event(EventReady, now, "")
		if !e.Adopted {
			e.ColdStart = now.Sub(m.heldAt)
		}
		f.eventLocked(e)
	}
}

// emitLocked queues a fact for flush. Called with mu held.
func (f *Fleet) emitLocked(u Usage, kind UsageKind, at time.Time, reason string) {
	if f.cfg.Usage == nil {
		return
	}
	u.Kind, u.At, u.Reason = kind, at, reason
	f.usageQ = append(f.usageQ, u)
}

func orNow(t, now time.Time) time.Time {
	if t.IsZero() {
		return now
	}
	return t
}
