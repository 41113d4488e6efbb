package live

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/thawhq/thaw/api"
	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/fleet"
)

// key is the Redis hash: deployment ID -> View (JSON).
const key = "thaw:live"

// Defaults of Config.
const (
	DefaultInterval = 500 * time.Millisecond
	DefaultExpiry   = 30 * time.Second
)

// View is one deployment as the leader's fleet sees it.
type View struct {
	Live      deploy.Live        `json:"live"`
	Instances []api.InstanceView `json:"instances"`
	Counts    fleet.Counts       `json:"counts"`
}

// Config configures a Publisher or a Reader.
type Config struct {
	Redis redis.UniversalClient
	// Interval is how often the Publisher writes and the Reader reads.
	// Default DefaultInterval.
	Interval time.Duration
	// Expiry is how long the hash outlives the leader's last write.
	// Default DefaultExpiry.
	Expiry time.Duration
	Logger *slog.Logger
}

func (c *Config) defaults() error {
	if c.Redis == nil {
		return errors.New("live: Redis is required")
	}
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	if c.Expiry <= 0 {
		c.Expiry = DefaultExpiry
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Publisher writes the leader's views.
type Publisher struct {
	cfg   Config
	views func() map[string]View
	now   chan struct{}
}

// NewPublisher returns a Publisher of what views returns (every
// deployment the fleet knows); Run writes.
func NewPublisher(cfg Config, views func() map[string]View) (*Publisher, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if views == nil {
		return nil, errors.New("live: views is required")
	}
	return &Publisher{cfg: cfg, views: views, now: make(chan struct{}, 1)}, nil
}

// Poke asks for a write now rather than at the next interval; it never
// blocks.
func (p *Publisher) Poke() {
	select {
	case p.now <- struct{}{}:
	default:
	}
}

// Run writes every Interval, and when poked, until ctx is done. Redis
// errors are logged once until a write succeeds again.
func (p *Publisher) Run(ctx context.Context) error {
	return every(ctx, p.cfg, p.now, "publishing the fleet's view", p.write)
}

// write replaces the hash with the current views, atomically.
func (p *Publisher) write(ctx context.Context) error {
	views := p.views()
	fields := make([]any, 0, 2*len(views))
	for id, v := range views {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		fields = append(fields, id, b)
	}
	_, err := p.cfg.Redis.TxPipelined(ctx, func(tx redis.Pipeliner) error {
		tx.Del(ctx, key)
		if len(fields) > 0 {
			tx.HSet(ctx, key, fields...)
			tx.PExpire(ctx, key, p.cfg.Expiry)
		}
		return nil
	})
	return err
}

// Reader follows the leader's views: a follower's api.Live and
// api.InstanceLister.
type Reader struct {
	cfg Config
	// mu guards views.
	mu    sync.Mutex
	views map[string]View
}

// NewReader returns a Reader; Run follows.
func NewReader(cfg Config) (*Reader, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	return &Reader{cfg: cfg, views: map[string]View{}}, nil
}

// Run reads the views every Interval until ctx is done. A read that fails
// keeps the views read before (logged once until a read succeeds).
func (r *Reader) Run(ctx context.Context) error {
	return every(ctx, r.cfg, nil, "reading the leader's view", r.Refresh)
}

// every runs do every cfg.Interval, and when poked, until ctx is done,
// logging its failures once until it succeeds again.
func every(ctx context.Context, cfg Config, poked <-chan struct{}, what string, do func(context.Context) error) error {
	t := time.NewTicker(cfg.Interval)
	defer t.Stop()
	failing := false
	for {
		err := do(ctx)
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			cfg.Logger.Warn("live: "+what+" failed", "err", err)
			failing = true
		case err == nil && failing:
			cfg.Logger.Info("live: " + what + " again")
			failing = false
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-poked:
		}
	}
}

// Refresh reads the views once.
func (r *Reader) Refresh(ctx context.Context) error {
	m, err := r.cfg.Redis.HGetAll(ctx, key).Result()
	if err != nil {
		return err
	}
	views := make(map[string]View, len(m))
	for id, s := range m {
		var v View
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			r.cfg.Logger.Warn("live: a view does not parse; skipped", "deploy", id, "err", err)
			continue
		}
		views[id] = v
	}
	r.mu.Lock()
	r.views = views
	r.mu.Unlock()
	return nil
}

// Live is the deployment's status as the leader last published it; for
// one it has not published, what the fleet says of a deployment it has not
// reconciled yet.
func (r *Reader) Live(d deploy.Deployment) deploy.Live {
	r.mu.Lock()
	v, ok := r.views[d.ID]
	r.mu.Unlock()
	if !ok {
		return fleet.Unreconciled(d)
	}
	return v.Live
}

// Instances is the deployment's instances as the leader last published
// them.
func (r *Reader) Instances(deployID string) []api.InstanceView {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.views[deployID].Instances
}

// Desired is the deployment's desired count as the leader last published
// it; false when it published none.
func (r *Reader) Desired(deployID string) (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.views[deployID]
	return v.Live.Instances.Desired, ok
}

// Counts is every deployment's instances by state as the leader last
// published them.
func (r *Reader) Counts() []fleet.Counts {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]fleet.Counts, 0, len(r.views))
	for _, v := range r.views {
		out = append(out, v.Counts)
	}
	return out
}
