package endpoints

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/httperr"
	"github.com/thawhq/thaw/proxy"
)

// Applier is the activator the Subscriber keeps up to date (proxy.Proxy).
type Applier interface {
	SetEndpoints(deployID string, capacity int, addrs map[string]string)
	Fail(deployID, reason string)
	Recover(deployID string)
	Remove(deployID string)
}

// Refuser is what an Applier also does when it can answer a deployment's
// held requests at once (proxy.Proxy): those of an owner over their
// spending limit (Record.Refused) get 429 insufficient_quota instead of
// waiting for capacity that will not come.
type Refuser interface {
	Refuse(deployID string, err *httperr.Error)
	Unrefuse(deployID string)
}

var _ Refuser = (*proxy.Proxy)(nil)

// SubscriberConfig configures a Subscriber.
type SubscriberConfig struct {
	Redis redis.UniversalClient
	// Apply receives every change. It may be set later with SetApplier
	// (the activator is built with the Subscriber as its Resolver, so it comes
	// second), but before Run.
	Apply Applier
	// Resync reloads every record this often, catching missed messages and
	// removals. Default 5s.
	Resync time.Duration
	// MissWait is how long Resolve waits for a model it does not know yet to
	// be published: behind Envoy, thaw's /authz already found the model, so
	// a miss here is a deployment created a moment ago. Default 2s.
	MissWait time.Duration
	Logger   *slog.Logger
}

// Subscriber follows the published records: it applies them to an
// activator's proxy and answers its model lookups (proxy.Resolver).
type Subscriber struct {
	cfg SubscriberConfig

	resyncNow chan struct{}

	// mu guards recs and updated.
	mu   sync.Mutex
	recs map[string]Record
	// updated is closed (and replaced) whenever a record is applied.
	updated chan struct{}
}

// NewSubscriber returns a Subscriber; Run starts following.
func NewSubscriber(cfg SubscriberConfig) (*Subscriber, error) {
	if cfg.Redis == nil {
		return nil, errors.New("endpoints: Redis is required")
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 5 * time.Second
	}
	if cfg.MissWait <= 0 {
		cfg.MissWait = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Subscriber{cfg: cfg, recs: map[string]Record{}, updated: make(chan struct{}), resyncNow: make(chan struct{}, 1)}, nil
}

// SetApplier sets Apply; call it before Run.
func (s *Subscriber) SetApplier(a Applier) { s.cfg.Apply = a }

// Resync asks Run to reload and apply every record now (thaw server: a
// replica whose term of leadership ended follows the new leader's
// endpoints at once). It never blocks.
func (s *Subscriber) Resync() {
	select {
	case s.resyncNow <- struct{}{}:
	default:
	}
}

// Run follows changes until ctx is done.
func (s *Subscriber) Run(ctx context.Context) error {
	if s.cfg.Apply == nil {
		return errors.New("endpoints: Subscriber.Apply is not set")
	}
	sub := s.cfg.Redis.Subscribe(ctx, channel)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil && ctx.Err() == nil {
		return fmt.Errorf("subscribe %s: %w", channel, err)
	}
	if err := s.resync(ctx); err != nil && ctx.Err() == nil {
		s.cfg.Logger.Warn("endpoints: initial load failed", "err", err)
	}
	t := time.NewTicker(s.cfg.Resync)
	defer t.Stop()
	msgs := sub.Channel()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := s.resync(ctx); err != nil && ctx.Err() == nil {
				s.cfg.Logger.Warn("endpoints: resync failed", "err", err)
			}
		case <-s.resyncNow:
			if err := s.resync(ctx); err != nil && ctx.Err() == nil {
				s.cfg.Logger.Warn("endpoints: resync failed", "err", err)
			}
		case m, ok := <-msgs:
			if !ok {
				return nil
			}
			if err := s.load(ctx, m.Payload); err != nil && ctx.Err() == nil {
				s.cfg.Logger.Warn("endpoints: load failed", "deploy", m.Payload, "err", err)
			}
		}
	}
}

// load reads one record and applies it (or its removal).
func (s *Subscriber) load(ctx context.Context, id string) error {
	b, err := s.cfg.Redis.Get(ctx, recordPrefix+id).Bytes()
	if errors.Is(err, redis.Nil) {
		s.remove(id)
		return nil
	}
	if err != nil {
		return err
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("record %s: %w", id, err)
	}
	s.apply(r)
	return nil
}

func (s *Subscriber) resync(ctx context.Context) error {
	seen := map[string]bool{}
	iter := s.cfg.Redis.Scan(ctx, 0, recordPrefix+"*", 100).Iterator()
	for iter.Next(ctx) {
		id := strings.TrimPrefix(iter.Val(), recordPrefix)
		seen[id] = true
		if err := s.load(ctx, id); err != nil {
			return err
		}
	}
	if err := iter.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	var gone []string
	for id := range s.recs {
		if !seen[id] {
			gone = append(gone, id)
		}
	}
	s.mu.Unlock()
	for _, id := range gone {
		s.remove(id)
	}
	return nil
}

func (s *Subscriber) apply(r Record) {
	s.mu.Lock()
	old, had := s.recs[r.DeployID]
	s.recs[r.DeployID] = r
	close(s.updated)
	s.updated = make(chan struct{})
	s.mu.Unlock()
	s.cfg.Apply.SetEndpoints(r.DeployID, r.Capacity, r.Addrs)
	switch {
	case r.Failed != "":
		s.cfg.Apply.Fail(r.DeployID, r.Failed)
	case had && old.Failed != "":
		s.cfg.Apply.Recover(r.DeployID)
	}
	if rf, ok := s.cfg.Apply.(Refuser); ok {
		switch {
		case r.Refused != "":
			rf.Refuse(r.DeployID, httperr.InsufficientQuota("", r.Refused))
		case had && old.Refused != "":
			rf.Unrefuse(r.DeployID)
		}
	}
}

func (s *Subscriber) remove(id string) {
	s.mu.Lock()
	_, had := s.recs[id]
	delete(s.recs, id)
	s.mu.Unlock()
	if had {
		s.cfg.Apply.Remove(id)
	}
}

// Resolve maps a model reference (deploy.ParseModelRef) to the user's
// deployment; another user's is unknown (deploy.ResolveModelRef). A model
// not known yet is waited for up to MissWait: it may have been created a
// moment ago. A deployment whose owner is over their spending limit
// (Record.Refused) gets OpenAI's 429 insufficient_quota at once, as from
// the control plane's own activator: nothing is held or woken.
func (s *Subscriber) Resolve(user, model string) (proxy.Target, error) {
	deadline := time.NewTimer(s.cfg.MissWait)
	defer deadline.Stop()
	asked := false
	for {
		s.mu.Lock()
		r, err := deploy.ResolveModelRef(user, model, s.findLocked)
		updated := s.updated
		s.mu.Unlock()
		switch {
		case err == nil && r.Refused != "":
			return proxy.Target{}, httperr.InsufficientQuota("", r.Refused)
		case err == nil:
			return proxy.Target{DeployID: r.DeployID, Model: r.Model, MaxBatchSize: r.Capacity}, nil
		case errors.Is(err, deploy.ErrBadModelRef):
			return proxy.Target{}, fmt.Errorf("%w: %s", proxy.ErrUnknownModel, model)
		}
		if !asked {
			asked = true
			select {
			case s.resyncNow <- struct{}{}:
			default:
			}
		}
		select {
		case <-updated:
		case <-deadline.C:
			return proxy.Target{}, fmt.Errorf("%w: %s", proxy.ErrUnknownModel, model)
		}
	}
}

// findLocked looks ref up among every user's records. Called with mu held.
func (s *Subscriber) findLocked(ref deploy.ModelRef) (Record, string, bool) {
	if ref.ID != "" {
		r, ok := s.recs[ref.ID]
		return r, r.Owner, ok
	}
	name := ref.String()
	for _, r := range s.recs {
		if r.Model == name {
			return r, r.Owner, true
		}
	}
	return Record{}, "", false
}

// Models lists the user's deployments, oldest first.
func (s *Subscriber) Models(user string) []proxy.Model {
	s.mu.Lock()
	var out []proxy.Model
	for _, r := range s.recs {
		if r.Owner == user {
			out = append(out, proxy.Model{ID: r.Model, Owner: r.Owner, Created: r.CreatedAt})
		}
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out
}

// InflightReporter publishes an activator's requests in flight per instance
// (thaw:inflight:<replica>, expiring with the replica), so that the control
// plane stops a draining instance only once every replica is done with it.
type InflightReporter struct {
	Redis   redis.UniversalClient
	Replica string
	// Inflight returns requests in flight per instance (proxy.Proxy's
	// InstanceInflight).
	Inflight func() map[string]int
	// Interval between writes. Default 100ms; TTL is 30 intervals.
	Interval time.Duration
}

// Run writes until ctx is done, then deletes the replica's key.
func (r InflightReporter) Run(ctx context.Context) error {
	if r.Interval <= 0 {
		r.Interval = 100 * time.Millisecond
	}
	key := inflightPrefix + r.Replica
	t := time.NewTicker(r.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			cctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_ = r.Redis.Del(cctx, key).Err()
			return nil
		case <-t.C:
		}
		m := r.Inflight()
		fields := make([]any, 0, 2*len(m)+2)
		fields = append(fields, "_", 0) // keeps the key (and the replica) visible while idle
		for id, n := range m {
			fields = append(fields, id, n)
		}
		_, _ = r.Redis.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Del(ctx, key)
			p.HSet(ctx, key, fields...)
			p.PExpire(ctx, key, 30*r.Interval)
			return nil
		})
	}
}
