package meter

import (
	"errors"
	"fmt"
	"time"
)

// Kind is the kind of a ledger fact.
type Kind string

// The kinds of fact, in the order an instance goes through them (ready may
// never come).
const (
	KindHeld     Kind = "held"
	KindReady    Kind = "ready"
	KindReleased Kind = "released"
)

// Valid reports whether k is one of the three kinds.
func (k Kind) Valid() bool {
	return k == KindHeld || k == KindReady || k == KindReleased
}

// Fact is one row of the append-only ledger: an instance's GPUs were taken
// (held), its model server became ready (ready: loading ends, serving
// begins), or its GPUs were freed (released). At comes from the runtime's
// own record.
type Fact struct {
	InstanceID, DeployID, Owner, Model, GPU string
	NumGPUs                                 int
	Kind                                    Kind
	At                                      time.Time
	// Reason says, for a released fact, how the instance ended ("stopped",
	// "failed: ...", "start timeout: ...").
	Reason string
}

// Interval is one instance's GPU holding, built from its facts. Ready and
// End are zero while not known (not ready yet, or never; still held).
type Interval struct {
	InstanceID, DeployID, Owner, Model, GPU string
	NumGPUs                                 int
	Start, Ready, End                       time.Time
	EndReason                               string
}

// ErrInvalidFact is returned by Record for a fact that cannot be stored: a
// missing instance ID or time, an unknown kind, a held fact without its
// deployment, owner, GPU type or GPU count.
var ErrInvalidFact = errors.New("meter: invalid fact")

// check reports what makes f unrecordable.
func (f Fact) check() error {
	bad := func(msg string) error {
		return fmt.Errorf("%w: instance %q %s: %s", ErrInvalidFact, f.InstanceID, f.Kind, msg)
	}
	switch {
	case f.InstanceID == "":
		return bad("no instance ID")
	case !f.Kind.Valid():
		return bad("unknown kind")
	case f.At.IsZero():
		return bad("no time")
	}
	if f.Kind == KindHeld {
		switch {
		case f.DeployID == "":
			return bad("no deployment")
		case f.Owner == "":
			return bad("no owner")
		case f.GPU == "":
			return bad("no GPU type")
		case f.NumGPUs < 1:
			return bad(fmt.Sprintf("num_gpus %d", f.NumGPUs))
		}
	}
	return nil
}

// end is the end of iv's holding as seen at now: End, or now while open.
func (iv Interval) end(now time.Time) time.Time {
	if iv.End.IsZero() {
		return now
	}
	return iv.End
}

// servingFrom is when iv stopped loading: Ready, or never (its end) when it
// was not ready; a Ready after the end counts as never.
func (iv Interval) servingFrom(now time.Time) time.Time {
	end := iv.end(now)
	if iv.Ready.IsZero() || iv.Ready.After(end) {
		return end
	}
	if iv.Ready.Before(iv.Start) {
		return iv.Start
	}
	return iv.Ready
}

// overlap returns the seconds of [a0, a1) within [b0, b1).
func overlap(a0, a1, b0, b1 time.Time) float64 {
	s, e := maxTime(a0, b0), minTime(a1, b1)
	if !e.After(s) {
		return 0
	}
	return e.Sub(s).Seconds()
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
