package autoscaler

import (
	"cmp"
	"fmt"
	"math"
	"time"
)

// Defaults for Config; doc.go explains each choice.
const (
	DefaultStableWindow      = 60 * time.Second
	DefaultPanicWindow       = 6 * time.Second
	DefaultPanicThreshold    = 2.0
	DefaultIdleTimeout       = 5 * time.Minute
	DefaultScaleDownDelay    = 30 * time.Second
	DefaultTargetUtilization = 1.0
)

// Config tunes the scaling decision. The zero value of each field means its
// default; to make a duration effectively zero, set it to 1ns.
type Config struct {
	// StableWindow is how far back a scale-down looks: the deployment only
	// shrinks to what the highest demand seen in this window needs.
	// Default 60s. Panic mode also lasts this long after the last burst.
	StableWindow time.Duration
	// PanicWindow is the burst-detection window: a scale-up sizes for the
	// highest demand seen in it. Default 6s.
	PanicWindow time.Duration
	// PanicThreshold enters panic mode when the panic window's demand
	// reaches this multiple of the current capacity. In panic mode the
	// deployment never scales down. Default 2.0.
	PanicThreshold float64
	// IdleTimeout is how long a deployment must see no demand at all before
	// it goes to its minimum (zero when min_instances is 0). Until then at
	// least one instance is kept. Default 5m.
	IdleTimeout time.Duration
	// ScaleDownDelay is the asymmetric cooldown: a scale-down waits until
	// this long has passed since the last change of the desired count.
	// Scale-ups never wait. Default 30s.
	ScaleDownDelay time.Duration
	// TargetUtilization is the fraction of BatchSize one instance is counted
	// as serving (an instance always counts for at least one request).
	// Values above 1 count on the model server's own queue. Default 1.0.
	TargetUtilization float64
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	c.StableWindow = cmp.Or(c.StableWindow, DefaultStableWindow)
	c.PanicWindow = cmp.Or(c.PanicWindow, DefaultPanicWindow)
	c.PanicThreshold = cmp.Or(c.PanicThreshold, DefaultPanicThreshold)
	c.IdleTimeout = cmp.Or(c.IdleTimeout, DefaultIdleTimeout)
	c.ScaleDownDelay = cmp.Or(c.ScaleDownDelay, DefaultScaleDownDelay)
	c.TargetUtilization = cmp.Or(c.TargetUtilization, DefaultTargetUtilization)
	return c
}

// validate reports a config no deployment can be scaled with.
func (c Config) validate() error {
	c = c.WithDefaults()
	switch {
	case c.StableWindow < 0, c.PanicWindow < 0, c.IdleTimeout < 0, c.ScaleDownDelay < 0:
		return fmt.Errorf("%w: negative duration", ErrConfig)
	case c.PanicThreshold < 0 || math.IsNaN(c.PanicThreshold):
		return fmt.Errorf("%w: PanicThreshold %v", ErrConfig, c.PanicThreshold)
	case c.TargetUtilization < 0 || math.IsNaN(c.TargetUtilization):
		return fmt.Errorf("%w: TargetUtilization %v", ErrConfig, c.TargetUtilization)
	case c.PanicWindow > c.StableWindow:
		return fmt.Errorf("%w: PanicWindow %v longer than StableWindow %v", ErrConfig, c.PanicWindow, c.StableWindow)
	}
	return nil
}

// Spec is what a deployment allows: its instance bounds and batch size.
type Spec struct {
	// Min is min_instances. It is always kept, even with no demand.
	Min int
	// Max is max_instances. A Max below Min is read as Min.
	Max int
	// BatchSize is max_batch_size: requests one instance serves at once.
	// Values below 1 count as 1.
	BatchSize int
}

// Input is one observation of a deployment.
type Input struct {
	// Now is the time of the observation. Decide never reads the clock.
	Now  time.Time
	Spec Spec
	// Current is the instance count already asked for: running plus
	// pending, placed or not. Counting pending instances keeps repeated
	// decisions during a burst from asking for the same capacity twice.
	Current int
	// Demand is the requests that want a slot now: held in activators,
	// in flight at instances, and waiting inside model servers, each
	// counted once.
	Demand int
	// Woken says a request just arrived for a deployment with no ready
	// capacity: the demand is at least 1 even if the demand source has not
	// counted it yet.
	Woken bool
}

// Decision is the outcome of one Decide call.
type Decision struct {
	// Desired is the absolute instance count wanted (never Current+n).
	Desired int
	// Reason explains Desired to a human, e.g. "burst: 40 requests need
	// 5 x 8" or "idle 5m0s: scale to min 0".
	Reason string
}

// sample is the demand observed at one time. Demand is a level: a sample
// holds from its time until the next sample, so a gap in observations (the
// demand source was down) carries the last known value forward instead of
// reading as zero.
type sample struct {
	at     time.Time
	demand int
}

// State is what Decide remembers about one deployment between calls. The
// zero State is a deployment seen for the first time. Treat it as opaque:
// pass the State Decide returned to the next call.
type State struct {
	started    bool
	start      time.Time // first observation: demand history begins here
	window     []sample  // oldest first; see record
	lastDemand time.Time // last time the demand level was above zero
	lastChange time.Time // last time desired changed
	desired    int       // the previous decision: Decide's memory; the fleet owns the count
	panicking  bool
	panicAt    time.Time // last time the panic threshold was reached
}

// Panicking reports whether the deployment is in panic mode (a burst
// outran its capacity within the last StableWindow).
func (s State) Panicking() bool { return s.panicking }

// Decide computes the desired instance count of one deployment from its
// previous state and a new observation, and returns the next state. It is
// pure: no I/O, no clock, no shared memory with st.
//
// Up: as soon as the highest demand of the panic window needs more than the
// previous decision, Desired jumps to ceil(demand / per-instance capacity),
// in the same call (a request for a deployment at zero scales it to one at
// once). Down: Desired falls only to what the highest demand of the stable
// window needs, only after a full stable window of history, only once
// ScaleDownDelay has passed since the last change, and never in panic mode.
// Idle: while any demand was seen within IdleTimeout at least one instance
// stays; after that the deployment goes to Min, and the demand seen before
// is forgotten, so neither window scales it back up without a new request.
// Last, Desired is clamped to [Min, Max], and Reason says which limit
// applied. (The per-user GPU quota is the fleet's: it spans deployments.)
func Decide(cfg Config, st State, in Input) (Decision, State) {
	cfg = cfg.WithDefaults()
	now := in.Now
	per := perInstance(cfg, in.Spec)
	current := max(in.Current, 0)
	demand := max(in.Demand, 0)
	if in.Woken {
		demand = max(demand, 1)
	}

	if !st.started {
		// No history: assume running instances were just used, so a
		// restarted loop neither idles them out nor shrinks them before
		// it has seen a full window.
		st = State{started: true, start: now, lastChange: now, desired: current}
		if current > 0 {
			st.lastDemand = now
		}
	}
	if demand > 0 || (len(st.window) > 0 && st.window[len(st.window)-1].demand > 0) {
		st.lastDemand = now
	}
	if now.Sub(st.lastDemand) >= cfg.IdleTimeout {
		// Idle: no demand for IdleTimeout, so whatever the windows still
		// hold is demand that is gone, and it already counted toward
		// the idle scale-down. Forget it: a window longer than the idle
		// timeout (the 6s panic window after a 3s one) must not scale
		// the deployment back up on the request it idled out after.
		// The next request is new demand and wakes it at once.
		st.window, st.panicking = nil, false
	}
	st.window = record(st.window, sample{at: now, demand: demand}, now.Add(-max(cfg.StableWindow, cfg.PanicWindow)))
	stableMax := maxSince(st.window, now.Add(-cfg.StableWindow))
	panicMax := maxSince(st.window, now.Add(-cfg.PanicWindow))

	if panicMax > 0 && float64(panicMax) >= cfg.PanicThreshold*float64(max(current, 1))*per {
		st.panicking, st.panicAt = true, now
	} else if st.panicking && now.Sub(st.panicAt) >= cfg.StableWindow {
		st.panicking = false
	}

	d, reason := choose(cfg, st, now, panicMax, stableMax, per, in.Spec.Min)
	d, reason = clamp(d, reason, in.Spec)

	if d != st.desired {
		st.desired, st.lastChange = d, now
	}
	return Decision{Desired: d, Reason: reason}, st
}

// choose is Decide's direction before the [Min, Max] clamp: up at once to
// what the panic window's highest demand needs, else down (or level) to what
// the stable window needs, unless panic, missing history or the scale-down
// delay holds the previous count.
func choose(cfg Config, st State, now time.Time, panicMax, stableMax int, per float64, minInstances int) (int, string) {
	base := st.desired
	if up := need(panicMax, per); up > base {
		label := "demand"
		switch {
		case base == 0:
			label = "wake"
		case st.panicking:
			label = "burst"
		}
		return up, fmt.Sprintf("%s: %s %d x %s", label, requestsNeed(panicMax), up, num(per))
	}
	target, why := stableTarget(cfg, st, now, stableMax, per, minInstances)
	idle := now.Sub(st.lastDemand) >= cfg.IdleTimeout
	switch {
	case target >= base, idle:
		// Idle: IdleTimeout without any demand is itself the evidence;
		// the stable window and scale-down delay guard against
		// shrinking under traffic, and there is none.
		return target, why
	case st.panicking:
		return base, fmt.Sprintf("burst: hold %d; scale-down to %d waits for %s without a burst", base, target, cfg.StableWindow)
	case now.Sub(st.start) < cfg.StableWindow:
		return base, fmt.Sprintf("hold %d: scale-down to %d waits for %s of demand history", base, target, cfg.StableWindow)
	case now.Sub(st.lastChange) < cfg.ScaleDownDelay:
		return base, fmt.Sprintf("hold %d: scale-down to %d in %s (scale-down delay %s)",
			base, target, cfg.ScaleDownDelay-now.Sub(st.lastChange), cfg.ScaleDownDelay)
	}
	return target, why
}

// stableTarget is what the stable window's highest demand needs, with the
// idle rule applied: at least one instance until IdleTimeout without demand,
// then min.
func stableTarget(cfg Config, st State, now time.Time, stableMax int, per float64, minInstances int) (int, string) {
	quiet := now.Sub(st.lastDemand)
	switch {
	case quiet >= cfg.IdleTimeout:
		return max(minInstances, 0), fmt.Sprintf("idle %s: scale to min %d", cfg.IdleTimeout, max(minInstances, 0))
	case stableMax == 0:
		return 1, fmt.Sprintf("no requests for %s: keep 1 until idle %s", quiet, cfg.IdleTimeout)
	}
	n := need(stableMax, per)
	return n, fmt.Sprintf("stable: max %s %d x %s over %s", requestsNeed(stableMax), n, num(per), cfg.StableWindow)
}

// clamp applies min_instances, then max_instances, and says so in the
// reason. The GPU quota is not applied here: it is per user, across
// deployments, so the fleet enforces it when it starts instances.
func clamp(d int, reason string, s Spec) (int, string) {
	lo := max(s.Min, 0)
	hi := max(s.Max, lo)
	if d < lo {
		d = lo
		reason += fmt.Sprintf("; min_instances keeps %d", lo)
	}
	if d > hi {
		d = hi
		reason += fmt.Sprintf("; max_instances limits it to %d", hi)
	}
	return d, reason
}

// perInstance is how many requests one instance is counted as serving.
func perInstance(cfg Config, s Spec) float64 {
	return max(float64(max(s.BatchSize, 1))*cfg.TargetUtilization, 1)
}

// need is the instances demand needs at per requests each. The small
// epsilon keeps float error (0.29*100 = 28.999...) from adding an instance.
func need(demand int, per float64) int {
	if demand <= 0 {
		return 0
	}
	return int(math.Ceil(float64(demand)/per - 1e-9))
}

// record returns a new window (never sharing memory with w) holding s and
// the samples of w at or after from, plus the one sample in effect at from.
func record(w []sample, s sample, from time.Time) []sample {
	i := 0
	for i < len(w) && w[i].at.Before(from) {
		i++
	}
	if i > 0 {
		i--
	}
	out := make([]sample, 0, len(w)-i+1)
	out = append(out, w[i:]...)
	return append(out, s)
}

// maxSince is the highest demand level in effect at any time in [from, end
// of w]: samples within the range and the one in effect at from.
func maxSince(w []sample, from time.Time) int {
	m := 0
	for j, s := range w {
		if j+1 < len(w) && !w[j+1].at.After(from) {
			continue // replaced before the window starts
		}
		m = max(m, s.demand)
	}
	return m
}

// requestsNeed renders "1 request needs" or "40 requests need".
func requestsNeed(n int) string {
	if n == 1 {
		return "1 request needs"
	}
	return fmt.Sprintf("%d requests need", n)
}

// num renders a per-instance capacity without trailing zeros: 8, 5.6.
func num(f float64) string { return fmt.Sprintf("%.4g", f) }
