package autoscaler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// ErrConfig is returned (wrapped) by NewLoop for a config it cannot run.
var ErrConfig = errors.New("autoscaler: invalid config")

// Defaults for LoopConfig.
const (
	DefaultTick   = time.Second
	DefaultResync = 30 * time.Second
)

// callTimeout bounds each call to the fleet or the demand source, so a hung
// dependency costs a few ticks, never the loop.
const callTimeout = 5 * time.Second

// Target is one deployment the loop scales.
type Target struct {
	ID   string
	Spec Spec
	// Current is the instances already asked for: running plus pending,
	// placed or not. It is the fleet's desired count, read each evaluation;
	// the fleet owns it (docs/ARCHITECTURE.md, "Who owns what").
	Current int
}

// Fleet lists the deployments to scale and applies desired counts. The
// fleet implements it.
type Fleet interface {
	// Targets lists every deployment that scales, with its current count.
	Targets() []Target
	// SetDesired asks for n instances of deployment id. It should record
	// the count and return quickly; placing instances happens elsewhere.
	// reason is human readable and may be shown to the deployment's owner.
	SetDesired(ctx context.Context, id string, n int, reason string) error
}

// DemandSource reads the current demand per deployment id (held + in flight
// + waiting in model servers). A deployment absent from the map has no
// demand; an error means the demand is unknown, not zero.
type DemandSource interface {
	Demand(ctx context.Context) (map[string]int, error)
}

// LoopConfig configures a Loop. Fleet and Demand are required.
type LoopConfig struct {
	// Decide tunes the scaling decision; zero fields take their defaults.
	Decide Config
	// Tick is how often every deployment is evaluated. Default 1s.
	Tick time.Duration
	// Resync is how long the loop trusts a SetDesired it made: when the
	// fleet still reports a different count after this long, the loop asks
	// again. Default 30s.
	Resync time.Duration
	Fleet  Fleet
	Demand DemandSource
	// Logger receives scale events (Info) and errors (Warn). Nil discards.
	Logger *slog.Logger
	// Scaled, when set, is told each scaling decision applied to the fleet
	// (SetDesired succeeded and the count changed), once: not again when
	// the loop repeats the same ask (Resync). It is called on Run's
	// goroutine and must not block.
	Scaled func(Scale)
}

// Scale is one scaling decision the loop applied, for the deployment's
// events feed.
type Scale struct {
	DeployID string
	// From is the fleet's count before, To the count asked.
	From, To int
	// Reason is the decision's, human readable.
	Reason string
	At     time.Time
}

// Loop evaluates every deployment each tick, and a woken deployment at
// once, and applies the decisions to the fleet. Time comes from the time
// package, so tests run it under testing/synctest.
type Loop struct {
	cfg  LoopConfig
	log  *slog.Logger
	wake chan struct{} // capacity 1: coalesces Wake calls

	mu      sync.Mutex // mu guards running and woken.
	running bool       // a Run is going: wakes are recorded
	woken   map[string]bool

	// states is owned by the goroutine in Run, and begun anew by each Run.
	states map[string]*targetState
}

// targetState is the loop's memory of one deployment.
type targetState struct {
	st      State
	asked   int       // the count of the last successful SetDesired
	askedAt time.Time // when it was made
	hasAsk  bool      // asked/askedAt are set
}

// NewLoop checks cfg and returns a loop ready to Run.
func NewLoop(cfg LoopConfig) (*Loop, error) {
	switch {
	case cfg.Fleet == nil:
		return nil, fmt.Errorf("%w: Fleet is nil", ErrConfig)
	case cfg.Demand == nil:
		return nil, fmt.Errorf("%w: Demand is nil", ErrConfig)
	case cfg.Tick < 0, cfg.Resync < 0:
		return nil, fmt.Errorf("%w: negative Tick or Resync", ErrConfig)
	}
	if err := cfg.Decide.validate(); err != nil {
		return nil, err
	}
	cfg.Decide = cfg.Decide.WithDefaults()
	if cfg.Tick == 0 {
		cfg.Tick = DefaultTick
	}
	if cfg.Resync == 0 {
		cfg.Resync = DefaultResync
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Loop{
		cfg:    cfg,
		log:    log,
		wake:   make(chan struct{}, 1),
		woken:  make(map[string]bool),
		states: make(map[string]*targetState),
	}, nil
}

// Run evaluates every deployment at once and then each tick, and a woken
// deployment as soon as Wake is called. It returns nil when ctx is done.
//
// Run may be called again after it returned (this replica won the
// autoscaler lease back), never concurrently. Each Run starts with no
// history: while it was not running another replica scaled, and demand
// remembered from the last term is not demand now.
func (l *Loop) Run(ctx context.Context) error {
	l.begin()
	defer l.end()
	t := time.NewTicker(l.cfg.Tick)
	defer t.Stop()
	l.evaluate(ctx, true)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			l.evaluate(ctx, true)
		case <-l.wake:
			l.evaluate(ctx, false)
		}
	}
}

// Wake asks for an immediate evaluation of deployment id, counting at least
// one request for it. Call it when a request arrives for a deployment with
// no ready capacity. It never blocks; calls made while an evaluation runs
// are coalesced into the next one. Safe for concurrent use.
//
// A Wake while no Run is going (this replica does not lead) is dropped:
// by the time a Run starts, its request is served, gone, or counted by the
// DemandSource, which the Run reads first.
func (l *Loop) Wake(id string) {
	l.mu.Lock()
	if !l.running {
		l.mu.Unlock()
		return
	}
	l.woken[id] = true
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// begin starts a Run with no history and no wakes.
func (l *Loop) begin() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.running = true
	l.states = make(map[string]*targetState)
}

// end stops recording wakes and drops those not yet taken.
func (l *Loop) end() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.running = false
	clear(l.woken)
	select {
	case <-l.wake:
	default:
	}
}

// takeWoken returns and clears the set of woken deployments.
func (l *Loop) takeWoken() map[string]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.woken
	l.woken = make(map[string]bool)
	return w
}

// evaluate decides and applies every deployment (all) or only the woken
// ones. A failed demand read skips the deployments that were not woken:
// unknown demand is not zero demand.
func (l *Loop) evaluate(ctx context.Context, all bool) {
	woken := l.takeWoken()
	if !all && len(woken) == 0 {
		return
	}
	dctx, cancel := context.WithTimeout(ctx, callTimeout)
	demand, err := l.cfg.Demand.Demand(dctx)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		l.log.Warn("autoscaler: demand unavailable; holding instance counts", "err", err)
		if len(woken) == 0 {
			return
		}
		all = false // woken deployments still scale: they have a request
		demand = nil
	}
	targets := l.cfg.Fleet.Targets()
	now := time.Now()
	if all {
		seen := make(map[string]bool, len(targets))
		for _, t := range targets {
			seen[t.ID] = true
		}
		for id := range l.states {
			if !seen[id] {
				delete(l.states, id)
			}
		}
	}
	for _, t := range targets {
		if all || woken[t.ID] {
			l.scale(ctx, now, t, demand[t.ID], woken[t.ID])
		}
	}
}

// scale decides one deployment and calls SetDesired when the count changes.
func (l *Loop) scale(ctx context.Context, now time.Time, t Target, demand int, woken bool) {
	ts := l.states[t.ID]
	if ts == nil {
		ts = &targetState{}
		l.states[t.ID] = ts
	}
	var d Decision
	d, ts.st = Decide(l.cfg.Decide, ts.st, Input{Now: now, Spec: t.Spec, Current: t.Current, Demand: demand, Woken: woken})
	if !l.shouldSet(ts, d.Desired, t.Current, now) {
		return
	}
	sctx, cancel := context.WithTimeout(ctx, callTimeout)
	err := l.cfg.Fleet.SetDesired(sctx, t.ID, d.Desired, d.Reason)
	cancel()
	if err != nil {
		ts.hasAsk = false // retry on the next tick
		if ctx.Err() == nil {
			l.log.Warn("autoscaler: set desired failed", "deploy_id", t.ID, "desired", d.Desired, "err", err)
		}
		return
	}
	repeat := ts.hasAsk && ts.asked == d.Desired
	ts.asked, ts.askedAt, ts.hasAsk = d.Desired, now, true
	if l.cfg.Scaled != nil && !repeat && d.Desired != t.Current {
		l.cfg.Scaled(Scale{DeployID: t.ID, From: t.Current, To: d.Desired, Reason: d.Reason, At: now})
	}
	l.log.Info("autoscaler: scale", "deploy_id", t.ID, "from", t.Current, "to", d.Desired, "reason", d.Reason)
}

// shouldSet says whether desired must be sent to the fleet: it differs from
// what runs (or from what was last asked), and the same count was not
// already asked for within Resync.
func (l *Loop) shouldSet(ts *targetState, desired, current int, now time.Time) bool {
	if ts.hasAsk && desired == ts.asked && now.Sub(ts.askedAt) < l.cfg.Resync {
		return false
	}
	return desired != current || (ts.hasAsk && desired != ts.asked)
}
