package fleet

// Lifecycle events (what a deployment's owner sees in its events feed) and
// the listing of a deployment's instances with the state each is in.

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// EventKind is what an Event says happened.
type EventKind string

// Event kinds.
const (
	// EventPlaced: the runtime placed an instance and took its GPUs. At is
	// the runtime's own record (Instance.Held). Adopted marks one that ran
	// before thaw started (a restart) and was taken over.
	EventPlaced EventKind = "placed"
	// EventPending: the deployment wants instances the runtime cannot
	// place, or the GPU quota holds back; Reason says why. Reported when
	// the reason changes, not again while it stays the same.
	EventPending EventKind = "pending"
	// EventReady: an instance passed the readiness probe and the warm-up.
	// ColdStart is how long it held its GPUs before (zero when Adopted).
	EventReady EventKind = "ready"
	// EventStopped: an instance that held GPUs ended without failing and
	// freed them. Reason is the usage fact's: "stopped" (scale-down,
	// deletion) or "start timeout: ...".
	EventStopped EventKind = "stopped"
	// EventFailed: an instance failed (exited, could not start) when the
	// fleet had not asked it to stop, placed or not. Reason is the
	// runtime's.
	EventFailed EventKind = "failed"
	// EventDeploymentFailed: the deployment's instances kept failing before
	// they got ready; no more are started until it is updated. Reason is
	// the last failure's.
	EventDeploymentFailed EventKind = "deployment_failed"
)

// Event is a lifecycle event of a deployment or one of its instances.
type Event struct {
	Kind            EventKind
	DeployID, Owner string
	// InstanceID is "" for EventPending and EventDeploymentFailed.
	InstanceID string
	// At is when it happened: the runtime's record for EventPlaced and
	// EventStopped/EventFailed when it has one, else the fleet's clock.
	At        time.Time
	Reason    string
	ColdStart time.Duration
	Adopted   bool
}

// InstanceStatus is one instance of a deployment as its owner sees it.
type InstanceStatus struct {
	// ID is "" for an instance the GPU quota holds back (never asked of
	// the runtime).
	ID    string
	State State
	// Since is when it entered State, by the fleet's clock.
	Since time.Time
	// Reason says why a pending instance is not placed; "" otherwise.
	Reason string
	// ReadyAt is when it became ready; zero if it never did.
	ReadyAt time.Time
}

// Instances lists deployment deployID's instances, those the GPU quota
// holds back included, ordered by Since (then ID). It is nil for a
// deployment the fleet does not know.
func (f *Fleet) Instances(deployID string) []InstanceStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	ds, ok := f.deployments[deployID]
	if !ok {
		return nil
	}
	out := make([]InstanceStatus, 0, len(ds.instances)+ds.quotaHeld)
	for _, in := range ds.instances {
		s := InstanceStatus{ID: in.id, State: in.shown, Since: in.shownSince, ReadyAt: in.readyAt}
		if s.State == StatePending {
			s.Reason = in.reason
		}
		out = append(out, s)
	}
	for range ds.quotaHeld {
		out = append(out, InstanceStatus{State: StatePending, Since: ds.quotaSince, Reason: ds.quotaReason()})
	}
	slices.SortFunc(out, func(a, b InstanceStatus) int {
		return cmp.Or(a.Since.Compare(b.Since), cmp.Compare(a.ID, b.ID))
	})
	return out
}

// quotaReason says why the GPU quota holds instances of ds back. Called
// with Fleet.mu held.
func (ds *deployment) quotaReason() string {
	return fmt.Sprintf("held back by the GPU quota of user %s (each instance needs %d %s)",
		ds.d.Owner, ds.d.Config.NumGPUs, ds.d.Config.GPU)
}

// noteLocked records, at now, the state each of ds's instances is in and
// since when, and reports a new shortfall reason (EventPending). Called
// with mu held, at the end of each reconcile, so every state change is
// seen within the step that made it.
func (f *Fleet) noteLocked(ds *deployment, now time.Time) {
	var pending *inst
	for _, in := range ds.instances {
		if s := in.state(); s != in.shown || in.shownSince.IsZero() {
			in.shown, in.shownSince = s, now
		}
		if in.shown == StatePending && (pending == nil || in.shownSince.Before(pending.shownSince) ||
			in.shownSince.Equal(pending.shownSince) && in.id < pending.id) {
			pending = in
		}
	}
	switch {
	case ds.quotaHeld == 0:
		ds.quotaSince = time.Time{}
	case ds.quotaSince.IsZero():
		ds.quotaSince = now
	}
	reason := ""
	switch {
	case ds.quotaHeld > 0:
		reason = ds.quotaReason()
	case pending != nil:
		reason = pending.reason
	}
	if reason != ds.pendingReason {
		ds.pendingReason = reason
		if reason != "" {
			f.eventLocked(Event{Kind: EventPending, DeployID: ds.d.ID, Owner: ds.d.Owner, At: now, Reason: reason})
		}
	}
}

// eventLocked queues e for flush. Called with mu held.
func (f *Fleet) eventLocked(e Event) {
	if f.cfg.Events != nil {
		f.eventQ = append(f.eventQ, e)
	}
}

// flush hands the queued usage facts and events to Config.Usage and
// Config.Events, in order, without holding mu. Runs on Run's goroutine.
func (f *Fleet) flush() {
	f.mu.Lock()
	usage, events := f.usageQ, f.eventQ
	f.usageQ, f.eventQ = nil, nil
	f.mu.Unlock()
	for _, u := range usage {
		f.cfg.Usage(u)
	}
	for _, e := range events {
		f.cfg.Events(e)
	}
}
