package nomad

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/thawhq/thaw/deploy"
)

// Defaults of PurgerConfig.
const (
	DefaultPurgeRetry   = 10 * time.Second
	DefaultPurgeTimeout = 30 * time.Second
)

// Deployments is what the Purger reads of the deployment store
// (*deploy.Store): which deployments exist, and a signal when that changes.
type Deployments interface {
	List(owner string) []deploy.Deployment
	Subscribe() <-chan struct{}
}

// PurgeRuntime is what the Purger needs of the runtime (*Runtime).
type PurgeRuntime interface {
	Purge(ctx context.Context, deployID string) error
	DeployIDs(ctx context.Context) ([]string, error)
}

// PurgerConfig configures a Purger.
type PurgerConfig struct {
	// Store holds the deployments. Required.
	Store Deployments
	// Runtime purges the Nomad job and Variable of a deployment. Required.
	Runtime PurgeRuntime
	// Retry is how often failed purges are retried. Default
	// DefaultPurgeRetry.
	Retry time.Duration
	// PurgeTimeout bounds one purge. Default DefaultPurgeTimeout.
	PurgeTimeout time.Duration
	// Logger receives failed purges. Default slog.Default().
	Logger *slog.Logger
}

// Purger purges the Nomad job and Variable (with the HF token) of every
// deleted deployment: at once when it leaves the store, and, after a
// restart, those of deployments deleted while thaw was down (thaw jobs in
// Nomad with no deployment). Failed purges are retried until they succeed.
type Purger struct {
	cfg     PurgerConfig
	changed <-chan struct{}
}

// NewPurger returns a Purger; Run starts it. It subscribes to the store's
// changes, so deletions from now on are not missed.
func NewPurger(cfg PurgerConfig) (*Purger, error) {
	if cfg.Store == nil || cfg.Runtime == nil {
		return nil, errors.New("nomad: purger: Store and Runtime are required")
	}
	if cfg.Retry <= 0 {
		cfg.Retry = DefaultPurgeRetry
	}
	if cfg.PurgeTimeout <= 0 {
		cfg.PurgeTimeout = DefaultPurgeTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Purger{cfg: cfg, changed: cfg.Store.Subscribe()}, nil
}

// purgeState is what the Purger remembers between passes.
type purgeState struct {
	known  map[string]bool // deployments in the store at the last pass
	todo   map[string]bool // deleted, purge not done yet
	listed bool            // Nomad's thaw jobs have been listed (once)
}

// Run purges on every store change and every Retry, until ctx is done.
func (p *Purger) Run(ctx context.Context) error {
	tick := time.NewTicker(p.cfg.Retry)
	defer tick.Stop()
	s := &purgeState{known: map[string]bool{}, todo: map[string]bool{}}
	for {
		p.pass(ctx, s)
		select {
		case <-ctx.Done():
			return nil
		case <-p.changed:
		case <-tick.C:
		}
	}
}

// pass finds the deployments deleted since the last pass (and, until Nomad
// has answered once, the jobs of deployments deleted while thaw was down)
// and purges everything still to do.
func (p *Purger) pass(ctx context.Context, s *purgeState) {
	now := map[string]bool{}
	for _, d := range p.cfg.Store.List("") {
		now[d.ID] = true
	}
	for id := range s.known {
		if !now[id] {
			s.todo[id] = true
		}
	}
	s.known = now
	if !s.listed {
		// Nomad unreachable: try again at the next pass.
		if ids, err := p.cfg.Runtime.DeployIDs(ctx); err == nil {
			s.listed = true
			for _, id := range ids {
				if !now[id] {
					s.todo[id] = true
				}
			}
		}
	}
	for id := range s.todo {
		if now[id] { // created again with the same ID: never, but be safe
			delete(s.todo, id)
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, p.cfg.PurgeTimeout)
		err := p.cfg.Runtime.Purge(pctx, id)
		cancel()
		if err != nil {
			p.cfg.Logger.Warn("purge deleted deployment from Nomad; will retry", "deploy", id, "err", err)
			continue
		}
		delete(s.todo, id)
	}
}
