package spend

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/thawhq/thaw/meter"
)

// Ledger is what the enforcer reads and writes of the meter's store.
type Ledger interface {
	Intervals(ctx context.Context, owner string, from, to time.Time) ([]meter.Interval, error)
	Account(ctx context.Context, owner string) (meter.Account, error)
	// MarkNotified records that owner was told threshold in month and
	// reports whether this call did (false: told already, by this or
	// another replica).
	MarkNotified(ctx context.Context, owner string, month time.Time, threshold int) (bool, error)
	Tokens(ctx context.Context, owner string, from, to time.Time) ([]meter.Tokens, error)
	Events(ctx context.Context, owner string, since time.Time, limit int) ([]meter.Event, error)
}

// Event types.
const (
	// EventSpendingLimit: a threshold of the monthly limit was crossed;
	// announced once a month per threshold.
	EventSpendingLimit = "spending_limit"
	// EventDeploymentIdle: a deployment has run with no request for
	// Config.IdleAfter; announced once per idle stretch.
	EventDeploymentIdle = "deployment_idle"
)

// Event is what a user is told: the JSON body of their webhook.
type Event struct {
	Owner     string    `json:"owner"`
	Type      string    `json:"type"`
	Threshold int       `json:"threshold_percent,omitempty"`
	SpentUSD  float64   `json:"spent_usd,omitempty"`
	LimitUSD  float64   `json:"limit_usd,omitempty"`
	Blocked   bool      `json:"blocked,omitempty"`
	Month     string    `json:"month,omitempty"` // "2026-11"
	DeployID  string    `json:"deploy_id,omitempty"`
	IdleSince time.Time `json:"idle_since,omitzero"`
	CostUSD   float64   `json:"idle_cost_usd,omitempty"`
	At        time.Time `json:"at"`
	Message   string    `json:"message"`
}

// Config configures an Enforcer. Ledger and Prices are required.
type Config struct {
	Ledger Ledger
	Prices meter.Prices
	Policy Policy
	// Announce is told every threshold crossing (the events log, the
	// user's webhook). It must not block for long.
	Announce func(ctx context.Context, a meter.Account, e Event)
	// Changed is called after a pass that blocked or unblocked a user, so
	// that the autoscaler acts at once instead of at its next tick.
	Changed func(owner string, blocked bool)
	// Interval is how often spend is checked. Default 2s: enforcement
	// happens within seconds of crossing.
	Interval time.Duration
	// IdleAfter is how long a deployment may run with no request before
	// its owner is told (EventDeploymentIdle). Default 24h; checked every
	// tenth of it, at most once a minute.
	IdleAfter time.Duration
	Logger    *slog.Logger
}

// Enforcer applies Decide to every user with spend this month.
type Enforcer struct {
	cfg Config
	log *slog.Logger

	// lastIdle is when the idle check last ran (Run's goroutine only).
	lastIdle time.Time

	// mu guards blocked.
	mu      sync.Mutex
	blocked map[string]string // owner -> message
}

// New returns an Enforcer; Run starts it.
func New(cfg Config) (*Enforcer, error) {
	if cfg.Ledger == nil || cfg.Prices == nil {
		return nil, errors.New("spend: Ledger and Prices are required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.IdleAfter <= 0 {
		cfg.IdleAfter = 24 * time.Hour
	}
	if cfg.Announce == nil {
		cfg.Announce = func(context.Context, meter.Account, Event) {}
	}
	if cfg.Changed == nil {
		cfg.Changed = func(string, bool) {}
	}
	return &Enforcer{cfg: cfg, log: cfg.Logger, blocked: map[string]string{}}, nil
}

// Blocked tells whether owner is over their monthly limit, with the
// message to show them.
func (e *Enforcer) Blocked(owner string) (string, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	msg, ok := e.blocked[owner]
	return msg, ok
}

// Run checks spend every Interval until ctx is done. A pass that fails
// (the ledger unreachable) keeps the previous verdicts.
func (e *Enforcer) Run(ctx context.Context) error {
	t := time.NewTicker(e.cfg.Interval)
	defer t.Stop()
	for {
		if err := e.Check(ctx, time.Now()); err != nil && ctx.Err() == nil {
			e.log.Warn("spending check failed; keeping the previous verdicts", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Spend is one user's month so far.
type Spend struct {
	SpentUSD float64
	// BurnUSDPerHour is what their running instances cost per hour now.
	BurnUSDPerHour float64
}

// Spent prices each owner's GPU time in [from, now): what they spent, and
// what their running instances burn per hour.
func Spent(ivs []meter.Interval, from, now time.Time, p meter.Prices) (map[string]Spend, error) {
	byOwner := map[string][]meter.Interval{}
	for _, iv := range ivs {
		byOwner[iv.Owner] = append(byOwner[iv.Owner], iv)
	}
	out := make(map[string]Spend, len(byOwner))
	for owner, ivs := range byOwner {
		rep, err := meter.Summarize(ivs, nil, from, now, now, meter.GroupDeployment, p)
		if err != nil {
			return nil, err
		}
		s := Spend{SpentUSD: rep.Total.CostUSD}
		for _, iv := range ivs {
			if iv.End.IsZero() {
				rate, err := p.Rate(iv.GPU)
				if err != nil {
					return nil, err
				}
				s.BurnUSDPerHour += rate * float64(iv.NumGPUs)
			}
		}
		out[owner] = s
	}
	return out, nil
}

// Check runs one pass at now.
func (e *Enforcer) Check(ctx context.Context, now time.Time) error {
	month := MonthStart(now)
	ivs, err := e.cfg.Ledger.Intervals(ctx, "", month, now)
	if err != nil {
		return err
	}
	spent, err := Spent(ivs, month, now, e.cfg.Prices)
	if err != nil {
		return err
	}
	owners := make([]string, 0, len(spent))
	for o := range spent {
		owners = append(owners, o)
	}
	sort.Strings(owners)
	blocked := map[string]string{}
	var errs []error
	for _, owner := range owners {
		msg, err := e.checkOwner(ctx, owner, spent[owner].SpentUSD, month, now)
		if err != nil {
			errs = append(errs, err)
			if old, ok := e.Blocked(owner); ok { // unknown: keep the verdict
				blocked[owner] = old
			}
			continue
		}
		if msg != "" {
			blocked[owner] = msg
		}
	}
	e.swap(blocked)
	if now.Sub(e.lastIdle) >= e.idleEvery() {
		e.lastIdle = now
		if err := e.checkIdle(ctx, ivs, now); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// idleEvery is how often the idle check runs: a tenth of IdleAfter, at
// most once a minute (it reads the token rows), at least every Interval.
func (e *Enforcer) idleEvery() time.Duration {
	return min(time.Minute, e.cfg.IdleAfter/10)
}

// checkIdle tells each owner about their deployments running idle for
// IdleAfter, once per idle stretch (an event of the stretch already
// recorded, before a restart too, is not repeated).
func (e *Enforcer) checkIdle(ctx context.Context, ivs []meter.Interval, now time.Time) error {
	from := now
	for _, iv := range ivs {
		if iv.End.IsZero() && iv.Start.Before(from) {
			from = iv.Start
		}
	}
	if now.Sub(from) < e.cfg.IdleAfter {
		return nil // nothing has run that long
	}
	toks, err := e.cfg.Ledger.Tokens(ctx, "", from.Truncate(time.Hour), now)
	if err != nil {
		return err
	}
	idle, err := FindIdle(ivs, toks, now, e.cfg.IdleAfter, e.cfg.Prices)
	if err != nil {
		return err
	}
	for _, d := range idle {
		told, err := e.cfg.Ledger.Events(ctx, d.Owner, d.Since, 1000)
		if err != nil {
			return err
		}
		if slices.ContainsFunc(told, func(ev meter.Event) bool {
			return ev.Type == EventDeploymentIdle && ev.DeployID == d.DeployID
		}) {
			continue
		}
		a, err := e.cfg.Ledger.Account(ctx, d.Owner)
		if err != nil {
			return err
		}
		ev := Event{Owner: d.Owner, Type: EventDeploymentIdle, DeployID: d.DeployID, IdleSince: d.Since.UTC(),
			CostUSD: Round2(d.CostUSD), At: now.UTC(), Message: d.Message(now)}
		e.log.Warn("deployment running idle", "owner", d.Owner, "deploy", d.DeployID, "since", d.Since, "cost_usd", ev.CostUSD)
		e.cfg.Announce(ctx, a, ev)
	}
	return nil
}

// checkOwner applies Decide to one owner and announces what it crossed;
// it returns the blocked message, or "".
func (e *Enforcer) checkOwner(ctx context.Context, owner string, spent float64, month, now time.Time) (string, error) {
	a, err := e.cfg.Ledger.Account(ctx, owner)
	if err != nil {
		return "", err
	}
	limit := e.cfg.Policy.Effective(a)
	notified := a.Notified
	if !a.NotifiedMonth.Equal(month) {
		notified = 0 // a new month starts unannounced
	}
	d := Decide(State{SpentUSD: spent, LimitUSD: limit, Notified: notified})
	msg := ""
	if d.Blocked {
		msg = BlockedMessage(spent, limit)
	}
	if len(d.Notify) == 0 {
		return msg, nil
	}
	// Recorded before announcing, by one atomic step: a crash between the
	// two loses an announcement, never repeats one, and of several
	// replicas crossing at once exactly one announces.
	won, err := e.cfg.Ledger.MarkNotified(ctx, owner, month, d.Notify[len(d.Notify)-1])
	if err != nil || !won {
		return msg, err
	}
	for _, t := range d.Notify {
		ev := Event{
			Owner: owner, Type: EventSpendingLimit, Threshold: t,
			SpentUSD: Round2(spent), LimitUSD: limit, Blocked: t >= 100 && d.Blocked,
			Month: month.Format("2006-01"), At: now.UTC(),
		}
		ev.Message = thresholdMessage(ev)
		e.log.Warn("spending threshold crossed", "owner", owner, "threshold", t, "spent_usd", ev.SpentUSD, "limit_usd", limit)
		e.cfg.Announce(ctx, a, ev)
	}
	return msg, nil
}

// swap installs the pass's verdicts and tells Changed what changed.
func (e *Enforcer) swap(blocked map[string]string) {
	e.mu.Lock()
	old := e.blocked
	e.blocked = blocked
	e.mu.Unlock()
	for o := range blocked {
		if _, ok := old[o]; !ok {
			e.log.Warn("user over the spending limit: scaling their deployments to zero", "owner", o)
			e.cfg.Changed(o, true)
		}
	}
	for o := range old {
		if _, ok := blocked[o]; !ok {
			e.log.Info("user under the spending limit again", "owner", o)
			e.cfg.Changed(o, false)
		}
	}
}

func thresholdMessage(e Event) string {
	if e.Threshold >= 100 {
		return BlockedMessage(e.SpentUSD, e.LimitUSD)
	}
	return fmtThreshold(e)
}

// Round2 rounds USD to cents, for display.
func Round2(v float64) float64 { return math.Round(v*100) / 100 }
