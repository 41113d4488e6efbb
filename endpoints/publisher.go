package endpoints

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/thawhq/thaw/deploy"
)

const (
	recordPrefix   = "thaw:ep:"
	channel        = "thaw:ep"
	inflightPrefix = "thaw:inflight:"
)

// Record is one deployment's routing state.
type Record struct {
	DeployID  string            `json:"deploy_id"`
	Owner     string            `json:"owner"`
	Model     string            `json:"model"` // "<owner>/<model_name>"
	CreatedAt time.Time         `json:"created_at"`
	Capacity  int               `json:"capacity"` // max_batch_size per instance
	Addrs     map[string]string `json:"addrs"`    // ready instances: id -> host:port
	// Failed, when set, is why requests fail at once (crash loop).
	Failed string `json:"failed,omitempty"`
	// Refused, when set, is the message requests are refused with at once
	// (429 insufficient_quota): the owner is over their spending limit.
	Refused string `json:"refused,omitempty"`
}

// PublisherConfig configures a Publisher.
type PublisherConfig struct {
	Redis redis.UniversalClient
	// Lookup returns a deployment's record fields (owner, model, created).
	Lookup func(deployID string) (deploy.Deployment, error)
	// Resync rewrites every record this often, healing lost writes and
	// refreshing new replicas. Default 5s.
	Resync time.Duration
	// DrainPoll is how often Drained checks the replicas. Default 50ms.
	DrainPoll time.Duration
	// Blocked tells whether an owner is over their spending limit, with
	// the message to show them (spend.Enforcer's Blocked). It is asked
	// each time a record is written, without the Publisher's lock; call
	// OwnerChanged when its answer changes. Nil: nobody is blocked.
	Blocked func(owner string) (msg string, blocked bool)
	Logger  *slog.Logger
}

// Publisher writes the fleet's endpoint updates to Redis. Its update methods
// never block on Redis (the fleet calls them with its lock held): they record
// and signal, and Run writes.
type Publisher struct {
	cfg   PublisherConfig
	dirty chan struct{}

	// mu guards recs, removed and pending.
	mu      sync.Mutex
	recs    map[string]*Record
	removed map[string]bool
	pending map[string]bool
}

// NewPublisher returns a Publisher; Run starts writing.
func NewPublisher(cfg PublisherConfig) (*Publisher, error) {
	if cfg.Redis == nil || cfg.Lookup == nil {
		return nil, errors.New("endpoints: Redis and Lookup are required")
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 5 * time.Second
	}
	if cfg.DrainPoll <= 0 {
		cfg.DrainPoll = 50 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Blocked == nil {
		cfg.Blocked = func(string) (string, bool) { return "", false }
	}
	return &Publisher{
		cfg: cfg, dirty: make(chan struct{}, 1),
		recs: map[string]*Record{}, removed: map[string]bool{}, pending: map[string]bool{},
	}, nil
}

func (p *Publisher) update(deployID string, fn func(r *Record)) {
	p.mu.Lock()
	r, ok := p.recs[deployID]
	if !ok {
		r = &Record{DeployID: deployID, Addrs: map[string]string{}}
		if d, err := p.cfg.Lookup(deployID); err == nil {
			r.Owner, r.Model, r.CreatedAt = d.Owner, d.FullName(), d.CreatedAt
		}
		p.recs[deployID] = r
	}
	fn(r)
	delete(p.removed, deployID)
	p.pending[deployID] = true
	p.mu.Unlock()
	p.signal()
}

func (p *Publisher) signal() {
	select {
	case p.dirty <- struct{}{}:
	default:
	}
}

// SetEndpoints publishes the deployment's ready instances.
func (p *Publisher) SetEndpoints(deployID string, capacity int, addrs map[string]string) {
	cp := make(map[string]string, len(addrs))
	for k, v := range addrs {
		cp[k] = v
	}
	p.update(deployID, func(r *Record) {
		r.Capacity, r.Addrs = capacity, cp
		if len(cp) > 0 {
			r.Failed = ""
		}
	})
}

// Fail publishes that requests for the deployment fail at once.
func (p *Publisher) Fail(deployID, reason string) {
	p.update(deployID, func(r *Record) { r.Failed = reason })
}

// Recover ends Fail.
func (p *Publisher) Recover(deployID string) {
	p.update(deployID, func(r *Record) { r.Failed = "" })
}

// OwnerChanged republishes every record of owner, whose spending verdict
// (Blocked) changed, so that replicas refuse or serve their requests at
// once rather than at the next resync. Like the update methods it records
// and signals: it never waits on Redis.
func (p *Publisher) OwnerChanged(owner string) {
	p.mu.Lock()
	n := 0
	for id, r := range p.recs {
		if r.Owner == owner {
			p.pending[id] = true
			n++
		}
	}
	p.mu.Unlock()
	if n > 0 {
		p.signal()
	}
}

// Remove unpublishes a deleted deployment.
func (p *Publisher) Remove(deployID string) {
	p.mu.Lock()
	delete(p.recs, deployID)
	p.removed[deployID] = true
	p.pending[deployID] = true
	p.mu.Unlock()
	p.signal()
}

// Drained returns a channel closed once no activator replica has a request
// in flight to the instance (replicas that died stop counting when their
// key expires).
func (p *Publisher) Drained(_ string, instanceID string) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(p.cfg.DrainPoll)
		defer t.Stop()
		for range t.C {
			n, err := p.inflight(context.Background(), instanceID)
			if err == nil && n == 0 {
				return
			}
		}
	}()
	return done
}

func (p *Publisher) inflight(ctx context.Context, instanceID string) (int, error) {
	total := 0
	iter := p.cfg.Redis.Scan(ctx, 0, inflightPrefix+"*", 100).Iterator()
	for iter.Next(ctx) {
		n, err := p.cfg.Redis.HGet(ctx, iter.Val(), instanceID).Int()
		if err != nil && !errors.Is(err, redis.Nil) {
			return 0, err
		}
		total += n
	}
	return total, iter.Err()
}

// Run writes changes as they come and every record each Resync, until ctx
// is done.
func (p *Publisher) Run(ctx context.Context) error {
	t := time.NewTicker(p.cfg.Resync)
	defer t.Stop()
	for {
		all := false
		select {
		case <-ctx.Done():
			return nil
		case <-p.dirty:
		case <-t.C:
			all = true
		}
		err := p.flush(ctx, all)
		if err == nil && all {
			err = p.prune(ctx)
		}
		if err != nil && ctx.Err() == nil {
			p.cfg.Logger.Warn("endpoints: publish failed", "err", err)
			time.Sleep(100 * time.Millisecond)
			p.signal()
		}
	}
}

// prune deletes the records of deployments that are gone, which this
// Publisher never knew: a deployment deleted while no leader ran (or
// while a previous one was dying) left its record behind, and activator
// replicas would go on routing it.
func (p *Publisher) prune(ctx context.Context) error {
	var gone []string
	iter := p.cfg.Redis.Scan(ctx, 0, recordPrefix+"*", 100).Iterator()
	for iter.Next(ctx) {
		id := strings.TrimPrefix(iter.Val(), recordPrefix)
		p.mu.Lock()
		_, known := p.recs[id]
		p.mu.Unlock()
		if _, err := p.cfg.Lookup(id); !known && errors.Is(err, deploy.ErrNotFound) {
			gone = append(gone, id)
		}
	}
	if err := iter.Err(); err != nil {
		return fmt.Errorf("list endpoints: %w", err)
	}
	for _, id := range gone {
		if err := p.cfg.Redis.Del(ctx, recordPrefix+id).Err(); err != nil {
			return fmt.Errorf("prune endpoints of %s: %w", id, err)
		}
		if err := p.cfg.Redis.Publish(ctx, channel, id).Err(); err != nil {
			return fmt.Errorf("publish endpoints: %w", err)
		}
		p.cfg.Logger.Info("endpoints: pruned the record of a deployment gone", "deploy", id)
	}
	return nil
}

func (p *Publisher) flush(ctx context.Context, all bool) error {
	p.mu.Lock()
	var recs []Record
	var dels []string
	for id := range p.pending {
		if p.removed[id] {
			dels = append(dels, id)
		}
	}
	for id, r := range p.recs {
		if all || p.pending[id] {
			recs = append(recs, *r) // Addrs is replaced, never changed in place
		}
	}
	clear(p.pending)
	clear(p.removed)
	p.mu.Unlock()

	requeue := func() {
		p.mu.Lock()
		for _, r := range recs {
			p.pending[r.DeployID] = true
		}
		for _, id := range dels {
			if _, ok := p.recs[id]; !ok {
				p.removed[id] = true
				p.pending[id] = true
			}
		}
		p.mu.Unlock()
	}
	// The verdict is asked outside mu: the fleet's updates never wait on
	// the enforcer.
	writes := make(map[string][]byte, len(recs))
	for _, r := range recs {
		if msg, blocked := p.cfg.Blocked(r.Owner); blocked {
			r.Refused = cmp.Or(msg, "monthly spending limit reached")
		}
		b, err := json.Marshal(r)
		if err != nil {
			requeue()
			return fmt.Errorf("record %s: %w", r.DeployID, err)
		}
		writes[r.DeployID] = b
	}
	_, err := p.cfg.Redis.Pipelined(ctx, func(pl redis.Pipeliner) error {
		for id, b := range writes {
			pl.Set(ctx, recordPrefix+id, b, 0)
		}
		for _, id := range dels {
			pl.Del(ctx, recordPrefix+id)
		}
		return nil
	})
	if err != nil {
		requeue()
		return fmt.Errorf("write endpoints: %w", err)
	}
	if all {
		return nil // a resync tells nobody: subscribers resync on their own
	}
	for id := range writes {
		if err := p.cfg.Redis.Publish(ctx, channel, id).Err(); err != nil {
			requeue()
			return fmt.Errorf("publish endpoints: %w", err)
		}
	}
	for _, id := range dels {
		if err := p.cfg.Redis.Publish(ctx, channel, id).Err(); err != nil {
			requeue()
			return fmt.Errorf("publish endpoints: %w", err)
		}
	}
	return nil
}
