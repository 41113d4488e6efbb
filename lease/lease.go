package lease

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
)

// renew extends the lease only if this replica still holds it.
var renew = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0`)

// release deletes the lease only if this replica holds it.
var release = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("DEL", KEYS[1])
end
return 0`)

// Config configures a Lease.
type Config struct {
	Redis redis.UniversalClient
	// Key names the lease, e.g. "thaw:leader:autoscaler".
	Key string
	// ID names this replica; unique among replicas.
	ID string
	// TTL is how long the lease outlives its holder. Default 5s: a standby
	// takes over within that of the leader's death.
	TTL time.Duration
	// Renew is how often the holder renews, and a standby retries. Default
	// TTL/3.
	Renew  time.Duration
	Logger *slog.Logger
}

// Lease runs a function only while this replica holds the lease.
type Lease struct{ cfg Config }

// New returns a Lease.
func New(cfg Config) (*Lease, error) {
	if cfg.Redis == nil || cfg.Key == "" || cfg.ID == "" {
		return nil, errors.New("lease: Redis, Key and ID are required")
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 5 * time.Second
	}
	if cfg.Renew <= 0 {
		cfg.Renew = cfg.TTL / 3
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Lease{cfg: cfg}, nil
}

// Run campaigns for the lease until ctx is done. While it holds the lease it
// runs lead with a context that is cancelled as soon as the lease is lost
// (a renewal fails or finds another holder); then it campaigns again.
func (l *Lease) Run(ctx context.Context, lead func(ctx context.Context) error) error {
	t := time.NewTicker(l.cfg.Renew)
	defer t.Stop()
	for {
		ok, err := l.cfg.Redis.SetNX(ctx, l.cfg.Key, l.cfg.ID, l.cfg.TTL).Result()
		if err != nil && ctx.Err() == nil {
			l.cfg.Logger.Warn("lease: campaign failed", "key", l.cfg.Key, "err", err)
		}
		if ok {
			l.cfg.Logger.Info("lease: acquired", "key", l.cfg.Key, "id", l.cfg.ID)
			if err := l.hold(ctx, t, lead); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// hold runs lead while renewing; returns when the lease is lost or ctx ends.
func (l *Lease) hold(ctx context.Context, t *time.Ticker, lead func(ctx context.Context) error) error {
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- lead(lctx) }()
	defer func() {
		cancel()
		<-done
		rctx, rcancel := context.WithTimeout(context.Background(), time.Second)
		defer rcancel()
		_ = release.Run(rctx, l.cfg.Redis, []string{l.cfg.Key}, l.cfg.ID).Err()
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-done:
			done <- err // for the deferred receive
			if err != nil && ctx.Err() == nil {
				return err
			}
			return nil
		case <-t.C:
			n, err := renew.Run(ctx, l.cfg.Redis, []string{l.cfg.Key}, l.cfg.ID, l.cfg.TTL.Milliseconds()).Int()
			if err != nil || n == 0 {
				if ctx.Err() != nil {
					return nil
				}
				l.cfg.Logger.Warn("lease: lost", "key", l.cfg.Key, "id", l.cfg.ID, "err", err)
				return nil
			}
		}
	}
}
