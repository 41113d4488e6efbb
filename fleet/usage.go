package fleet

// GPU-time facts: what the fleet tells the meter about each instance.

import "time"

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
	held bool  // UsageHeld was emitted
	// stopReason is set when the fleet asked the stop: the reason of the
	// UsageReleased fact, whatever phase the runtime ends the instance in.
	stopReason string
}

// meterLocked starts the record of instance id of spec. Called with mu
// held.
func (f *Fleet) meterLocked(id string, spec Spec) {
	f.meters[id] = &metered{fact: Usage{
		InstanceID: id, DeployID: spec.DeployID, Owner: spec.Owner,
		Model: spec.Model, GPU: spec.GPU, NumGPUs: spec.NumGPUs,
	}}
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
			m.held = true
			f.emitLocked(m.fact, UsageHeld, orNow(ev.Held, now), "")
		}
	case PhaseFailed, PhaseStopped:
		delete(f.meters, ev.ID)
		if !m.held && !ev.Held.IsZero() {
			// It ran, but its running report never reached the fleet.
			m.held = true
			f.emitLocked(m.fact, UsageHeld, ev.Held, "")
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
	}
}

// meterReadyLocked reports that instance id became ready at now. Called
// with mu held.
func (f *Fleet) meterReadyLocked(id string, now time.Time) {
	if m := f.meters[id]; m != nil && m.held {
		f.emitLocked(m.fact, UsageReady, now, "")
	}
}

// emitLocked queues a fact for flushUsage. Called with mu held.
func (f *Fleet) emitLocked(u Usage, kind UsageKind, at time.Time, reason string) {
	if f.cfg.Usage == nil {
		return
	}
	u.Kind, u.At, u.Reason = kind, at, reason
	f.usageQ = append(f.usageQ, u)
}

// flushUsage hands the queued facts to Config.Usage, in order, without
// holding mu. Runs on Run's goroutine.
func (f *Fleet) flushUsage() {
	f.mu.Lock()
	q := f.usageQ
	f.usageQ = nil
	f.mu.Unlock()
	for _, u := range q {
		f.cfg.Usage(u)
	}
}

func orNow(t, now time.Time) time.Time {
	if t.IsZero() {
		return now
	}
	return t
}
