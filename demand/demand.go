package demand

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	keyPrefix   = "thaw:demand:"
	wakeChannel = "thaw:wake"
)

// ReporterConfig configures a Reporter.
type ReporterConfig struct {
	Redis redis.UniversalClient
	// Replica names this process; it must be unique among live replicas.
	Replica string
	// TTL is how long a replica's numbers outlive its last write, and how
	// long a Wake may wait for Redis before it is dropped. Default 5s.
	TTL time.Duration
	// Heartbeat rewrites the numbers (refreshing TTL) at least this often.
	// Default 1s.
	Heartbeat time.Duration
	// MinInterval spaces writes under load: changes within it are coalesced
	// into one write. Default 10ms.
	MinInterval time.Duration
	Logger      *slog.Logger
	// Now stamps each Wake and each write; nil means time.Now.
	Now func() time.Time
}

// load is a deployment's held and in-flight requests at one replica.
type load struct{ held, inflight int }

// Reporter publishes this replica's demand to Redis. Set and Wake never block
// on Redis: they record and signal, and Run writes.
type Reporter struct {
	cfg   ReporterConfig
	key   string
	dirty chan struct{}

	// mu guards counts and wakes.
	mu     sync.Mutex
	counts map[string]load      // this replica's requests per deployment
	wakes  map[string]time.Time // unpublished wakes: when each was asked
}

// NewReporter returns a Reporter; Run starts writing.
func NewReporter(cfg ReporterConfig) (*Reporter, error) {
	if cfg.Redis == nil || cfg.Replica == "" {
		return nil, errors.New("demand: Redis and Replica are required")
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 5 * time.Second
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = time.Second
	}
	if cfg.MinInterval <= 0 {
		cfg.MinInterval = 10 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Reporter{
		cfg: cfg, key: keyPrefix + cfg.Replica, dirty: make(chan struct{}, 1),
		counts: map[string]load{}, wakes: map[string]time.Time{},
	}, nil
}

// Set records a deployment's held and in-flight requests on this replica.
func (r *Reporter) Set(deployID string, held, inflight int) {
	r.mu.Lock()
	r.counts[deployID] = load{held, inflight}
	r.mu.Unlock()
	r.signal()
}

// Wake asks the autoscaler to look at deployID now. The signal is published
// after the demand that caused it is written, so the autoscaler reads it.
//
// A wake that could not be published within TTL (Redis was down) is
// dropped: the autoscaler counts it as a request that just arrived, and by
// then that request is either still held, and so in the demand the
// autoscaler reads every tick, or gone, and must not start an instance.
func (r *Reporter) Wake(deployID string) {
	r.mu.Lock()
	r.wakes[deployID] = r.cfg.Now()
	r.mu.Unlock()
	r.signal()
}

// requeue puts back wakes that failed to publish, keeping their time, unless
// a Wake of the same deployment came meanwhile (it is newer).
func (r *Reporter) requeue(wakes map[string]time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, at := range wakes {
		if _, ok := r.wakes[id]; !ok {
			r.wakes[id] = at
		}
	}
}

func (r *Reporter) signal() {
	select {
	case r.dirty <- struct{}{}:
	default:
	}
}

// Run writes demand on change (coalesced) and on every heartbeat until ctx
// is done, then removes this replica's key.
func (r *Reporter) Run(ctx context.Context) error {
	hb := time.NewTicker(r.cfg.Heartbeat)
	defer hb.Stop()
	for {
		select {
		case <-ctx.Done():
			cctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_ = r.cfg.Redis.Del(cctx, r.key).Err()
			return nil
		case <-r.dirty:
		case <-hb.C:
		}
		if err := r.flush(ctx, r.cfg.Now()); err != nil && ctx.Err() == nil {
			r.cfg.Logger.Warn("demand: write to redis failed", "err", err)
			r.signal() // try again after MinInterval
		}
		select {
		case <-ctx.Done():
		case <-time.After(r.cfg.MinInterval):
		}
	}
}

// flush writes the counts and publishes the wakes younger than TTL at now,
// which Run reads once per step.
func (r *Reporter) flush(ctx context.Context, now time.Time) error {
	r.mu.Lock()
	fields := make([]any, 0, 2*len(r.counts))
	for id, c := range r.counts {
		if c == (load{}) {
			delete(r.counts, id)
			continue
		}
		fields = append(fields, id, fmt.Sprintf("%d %d", c.held, c.inflight))
	}
	wakes := make(map[string]time.Time, len(r.wakes))
	for id, at := range r.wakes {
		if now.Sub(at) < r.cfg.TTL {
			wakes[id] = at
		}
	}
	clear(r.wakes)
	r.mu.Unlock()

	_, err := r.cfg.Redis.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, r.key)
		if len(fields) > 0 {
			p.HSet(ctx, r.key, fields...)
			p.PExpire(ctx, r.key, r.cfg.TTL)
		}
		return nil
	})
	if err != nil {
		r.requeue(wakes)
		return fmt.Errorf("write demand: %w", err)
	}
	for id := range wakes {
		if err := r.cfg.Redis.Publish(ctx, wakeChannel, id).Err(); err != nil {
			r.requeue(wakes)
			return fmt.Errorf("publish wake: %w", err)
		}
		delete(wakes, id)
	}
	return nil
}

// Counts is a deployment's demand: Held and InFlight summed over live
// activator replicas, Running and Waiting as its model servers report them.
type Counts struct{ Held, InFlight, Running, Waiting int }

// Demand is the number of requests the deployment has to serve: held ones,
// plus what its servers are working on. Requests an activator forwarded are also
// running at a server, so the larger of the two views counts, not their
// sum; the servers' view adds warm traffic that bypassed the activators and
// requests queued inside the servers.
func (c Counts) Demand() int { return c.Held + max(c.InFlight, c.Running+c.Waiting) }

// Reader reads demand summed over every live replica.
type Reader struct{ Redis redis.UniversalClient }

// Counts returns held and in-flight requests per deployment.
func (rd Reader) Counts(ctx context.Context) (map[string]Counts, error) {
	out := map[string]Counts{}
	iter := rd.Redis.Scan(ctx, 0, keyPrefix+"*", 100).Iterator()
	for iter.Next(ctx) {
		m, err := rd.Redis.HGetAll(ctx, iter.Val()).Result()
		if err != nil {
			return nil, fmt.Errorf("read demand: %w", err)
		}
		eachPair(m, func(id string, held, inflight int) {
			c := out[id]
			c.Held += held
			c.InFlight += inflight
			out[id] = c
		})
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("scan demand: %w", err)
	}
	servers, err := rd.Redis.HGetAll(ctx, serversKey).Result()
	if err != nil {
		return nil, fmt.Errorf("read server load: %w", err)
	}
	eachPair(servers, func(id string, running, waiting int) {
		c := out[id]
		c.Running, c.Waiting = running, waiting
		out[id] = c
	})
	return out, nil
}

// Demand returns Counts.Demand per deployment (the autoscaler's input).
func (rd Reader) Demand(ctx context.Context) (map[string]int, error) {
	c, err := rd.Counts(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]int, len(c))
	for id, v := range c {
		out[id] = v.Demand()
	}
	return out, nil
}

// eachPair calls fn with each field of a demand hash whose value is two
// counts, "<a> <b>"; it skips any other value.
func eachPair(m map[string]string, fn func(id string, a, b int)) {
	for id, v := range m {
		if a, b, ok := parse(v); ok {
			fn(id, a, b)
		}
	}
}

func parse(v string) (a, b int, ok bool) {
	x, y, found := strings.Cut(v, " ")
	if !found {
		return 0, 0, false
	}
	a, err1 := strconv.Atoi(x)
	b, err2 := strconv.Atoi(y)
	return a, b, err1 == nil && err2 == nil
}

// ListenWakes calls fn with each deploy_id published by a Reporter's Wake,
// until ctx is done. go-redis resubscribes after a connection loss.
func ListenWakes(ctx context.Context, rdb redis.UniversalClient, fn func(deployID string)) error {
	sub := rdb.Subscribe(ctx, wakeChannel)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil && ctx.Err() == nil {
		return fmt.Errorf("subscribe %s: %w", wakeChannel, err)
	}
	ch := sub.Channel()
	for {
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-ch:
			if !ok {
				return nil
			}
			fn(m.Payload)
		}
	}
}
