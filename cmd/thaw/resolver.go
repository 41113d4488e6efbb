package main

import (
	"fmt"

	"github.com/thawhq/thaw/autoscaler"
	"github.com/thawhq/thaw/demand"
	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/fleet"
	"github.com/thawhq/thaw/httperr"
	"github.com/thawhq/thaw/meter"
	"github.com/thawhq/thaw/proxy"
)

// resolver answers the activator's model lookups from the deploy store.
type resolver struct {
	store *deploy.Store
	// blocked tells a user over their spending limit (spend.Enforcer).
	blocked func(owner string) (string, bool)
}

// Resolve maps a model reference (deploy.ParseModelRef) to the caller's
// deployment; another user's is unknown (deploy.ResolveModelRef). A user
// over their spending limit gets OpenAI's 429 insufficient_quota, so
// nothing wakes.
func (r resolver) Resolve(user, model string) (proxy.Target, error) {
	d, err := deploy.ResolveModelRef(user, model, r.find)
	if err != nil {
		return proxy.Target{}, fmt.Errorf("%w: %s", proxy.ErrUnknownModel, model)
	}
	if msg, blocked := r.blocked(d.Owner); blocked {
		return proxy.Target{}, httperr.InsufficientQuota("", msg)
	}
	return proxy.Target{DeployID: d.ID, Model: d.FullName(), MaxBatchSize: d.Config.MaxBatchSize}, nil
}

// find looks ref up among every user's deployments, reading the store's
// backend on a miss (a deployment just created on another replica).
func (r resolver) find(ref deploy.ModelRef) (deploy.Deployment, string, bool) {
	var d deploy.Deployment
	var err error
	if ref.ID != "" {
		d, err = r.store.Fetch(ref.ID)
	} else {
		d, err = r.store.FetchByName(ref.Owner, ref.Name)
	}
	return d, d.Owner, err == nil
}

// Models lists the user's deployments as OpenAI models.
func (r resolver) Models(user string) []proxy.Model {
	var out []proxy.Model
	for _, d := range r.store.List(user) {
		out = append(out, proxy.Model{ID: d.FullName(), Owner: d.Owner, Created: d.CreatedAt})
	}
	return out
}

// scaleTargets adapts the fleet to the autoscaler's view. The GPU quota is
// not part of the decision: the quota is per user, across deployments, so
// the fleet enforces it and reports the instances it holds
// back in instances.reason; desired stays what the load needs.
type scaleTargets struct{ *fleet.Fleet }

func (s scaleTargets) Targets() []autoscaler.Target {
	ts := s.Fleet.Targets()
	out := make([]autoscaler.Target, 0, len(ts))
	for _, t := range ts {
		spec := autoscaler.Spec{Min: t.Min, Max: t.Max, BatchSize: t.MaxBatchSize}
		out = append(out, autoscaler.Target{ID: t.ID, Spec: spec, Current: t.Current})
	}
	return out
}

// spendLimited is the deploy store as the fleet sees it: every deployment
// of a user over their spending limit has min and max instances 0, so the
// fleet drains their instances (no stream is cut) and starts none until
// the limit is raised or the month turns.
type spendLimited struct {
	*deploy.Store
	blocked func(owner string) (string, bool)
}

func (s spendLimited) List(owner string) []deploy.Deployment {
	ds := s.Store.List(owner)
	for i := range ds {
		if _, b := s.blocked(ds[i].Owner); b {
			ds[i].Settings.MinInstances, ds[i].Settings.MaxInstances = 0, 0
		}
	}
	return ds
}

// scrapeTargets are the fleet's ready instances as the scraper reads them,
// each with what its warm-up made it count as the baseline of its first read.
func scrapeTargets(ready []fleet.Ready) []demand.Target {
	out := make([]demand.Target, len(ready))
	for i, r := range ready {
		w := r.Warmup
		out[i] = demand.Target{DeployID: r.DeployID, InstanceID: r.InstanceID, Addr: r.Addr,
			Baseline: meter.Counters{Requests: w.Requests, PromptTokens: w.PromptTokens, CompletionTokens: w.CompletionTokens}}
	}
	return out
}
