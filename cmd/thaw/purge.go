package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/thawhq/thaw/deploy"
)

// fanout lets the fleet and the purger both follow the store's Changed
// signal, which has room for one reader only. It implements fleet.Store.
type fanout struct {
	*deploy.Store
	fleet, purge chan struct{}
}

func newFanout(s *deploy.Store) *fanout {
	return &fanout{Store: s, fleet: make(chan struct{}, 1), purge: make(chan struct{}, 1)}
}

// Changed is the fleet's copy of the store's signal.
func (f *fanout) Changed() <-chan struct{} { return f.fleet }

// run forwards the store's signals until ctx is done.
func (f *fanout) run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-f.Store.Changed():
			for _, ch := range []chan struct{}{f.fleet, f.purge} {
				select {
				case ch <- struct{}{}:
				default:
				}
			}
		}
	}
}

// purgeRuntime is what the purger needs of the Nomad runtime.
type purgeRuntime interface {
	Purge(ctx context.Context, deployID string) error
	DeployIDs(ctx context.Context) ([]string, error)
}

// purger purges the Nomad job and Variable of every deleted deployment:
// at once when it leaves the store, and at start for the jobs of
// deployments deleted while thaw was down. Failed purges are retried.
type purger struct {
	store   *deploy.Store
	changed <-chan struct{}
	rt      purgeRuntime
	log     *slog.Logger
	// retry is how often failed purges are retried. Default 10s.
	retry time.Duration
}

func (p *purger) run(ctx context.Context) error {
	if p.retry <= 0 {
		p.retry = 10 * time.Second
	}
	tick := time.NewTicker(p.retry)
	defer tick.Stop()
	known := map[string]bool{}
	todo := map[string]bool{} // deleted, purge not done yet
	listed := false
	for {
		now := map[string]bool{}
		for _, d := range p.store.List("") {
			now[d.ID] = true
		}
		for id := range known {
			if !now[id] {
				todo[id] = true
			}
		}
		known = now
		if !listed {
			if ids, err := p.rt.DeployIDs(ctx); err == nil {
				listed = true
				for _, id := range ids {
					if !now[id] {
						todo[id] = true
					}
				}
			}
		}
		for id := range todo {
			if now[id] { // created again with the same ID: never, but be safe
				delete(todo, id)
				continue
			}
			pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := p.rt.Purge(pctx, id)
			cancel()
			if err != nil {
				p.log.Warn("purge deleted deployment from Nomad; will retry", "deploy", id, "err", err)
				continue
			}
			delete(todo, id)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-p.changed:
		case <-tick.C:
		}
	}
}
