package fleet

// State is how one instance counts, in the deploy API's status
// (instances.running, instances.reason) and in the thaw_instances metric
// alike: both read it from inst.state, so they cannot disagree.
type State string

// Instance states. The values are the metric's state label.
const (
	// StatePending: the runtime has not placed the instance and says why
	// (no free GPU, Nomad refused the job, ...).
	StatePending State = "pending"
	// StateStarting: asked for and not refused, or placed, but the model
	// server does not serve yet (loading weights).
	StateStarting State = "starting"
	// StateRunning: ready; the request path routes to it.
	StateRunning State = "running"
	// StateDraining: leaving, on a scale-down or a start timeout. It no
	// longer counts toward desired but still holds its GPUs until it stops.
	StateDraining State = "draining"
)

// state classifies the instance. It is the only place that does: a pure
// function of what the fleet knows of it.
//
// A pending instance without a reason is starting, not pending: that is
// every instance just asked of the runtime (the fleet has no report yet)
// and a Nomad allocation placed but without its address yet. Pending means
// the runtime gave a reason why it cannot place it.
func (in *inst) state() State {
	switch {
	case in.draining:
		return StateDraining
	case in.ready:
		return StateRunning
	case in.phase == PhasePending && in.reason != "":
		return StatePending
	default:
		return StateStarting
	}
}

// tally is a deployment's instances counted by state.
type tally struct {
	running, starting, pending, draining int
	// reasons are the runtime's reasons of the pending instances.
	reasons []string
}

// tally counts ds's instances by state. Called with Fleet.mu held.
func (ds *deployment) tally() tally {
	var t tally
	for _, in := range ds.instances {
		switch in.state() {
		case StateDraining:
			t.draining++
		case StateRunning:
			t.running++
		case StateStarting:
			t.starting++
		case StatePending:
			t.pending++
			t.reasons = append(t.reasons, in.reason)
		}
	}
	return t
}
