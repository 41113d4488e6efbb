package endpoints

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/thawhq/thaw/auth"
)

// grantKey holds the key of the edge's grants (auth.Grants): the control
// plane issues grants with it, the activators verify them. It outlives
// restarts, so a grant issued just before one is still good after it.
const grantKey = "thaw:edge:grant-key"

// CreateGrants returns the edge's Grants, creating the shared key in Redis
// if no control plane has yet.
func CreateGrants(ctx context.Context, rdb *redis.Client) (*auth.Grants, error) {
	if err := rdb.SetNX(ctx, grantKey, auth.NewGrantKey(), 0).Err(); err != nil {
		return nil, fmt.Errorf("edge grant key: %w", err)
	}
	return loadGrants(ctx, rdb)
}

// WaitGrants returns the edge's Grants once a control plane has created the
// key, polling Redis until ctx is done.
func WaitGrants(ctx context.Context, rdb *redis.Client) (*auth.Grants, error) {
	for {
		g, err := loadGrants(ctx, rdb)
		if !errors.Is(err, redis.Nil) {
			return g, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("edge grant key: no control plane has created it in Redis yet: %w", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func loadGrants(ctx context.Context, rdb *redis.Client) (*auth.Grants, error) {
	key, err := rdb.Get(ctx, grantKey).Bytes()
	if err != nil {
		return nil, err
	}
	return auth.NewGrants(key)
}

// grantKeyEvery is how often FollowGrantKey looks at the shared key.
const grantKeyEvery = 5 * time.Second

// FollowGrantKey keeps g and the key in Redis the same until ctx is done:
// Redis holds rebuildable state and may lose the key (a restart without
// persistence). Every grantKeyEvery it puts g's key back if it is gone
// (SETNX, so the first holder to notice wins) and takes the key in Redis if
// it differs (another control plane created one meanwhile). Within that
// period of a lost key, every holder issues and verifies with one key again.
func FollowGrantKey(ctx context.Context, rdb *redis.Client, g *auth.Grants) error {
	t := time.NewTicker(grantKeyEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := rdb.SetNX(ctx, grantKey, g.Key(), 0).Err(); err != nil {
			continue // Redis away: keep the key we have
		}
		if key, err := rdb.Get(ctx, grantKey).Bytes(); err == nil && !bytes.Equal(key, g.Key()) {
			_ = g.SetKey(key)
		}
	}
}
