// Package redistest serves an in-memory Redis (miniredis) to tests over
// in-memory pipes (net.Pipe) rather than a socket, so that a
// testing/synctest bubble can wait on its clients: a goroutine blocked on a
// socket is never durably blocked, one blocked on a pipe is.
package redistest

import (
	"context"
	"net"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// New returns a miniredis and a client of it over in-memory pipes. Both are
// closed when the test ends. Call it inside the synctest bubble that uses
// them.
func New(t testing.TB) (*miniredis.Miniredis, *redis.Client) {
	t.Helper()
	mr := miniredis.NewMiniRedis()
	t.Cleanup(mr.Close)
	return mr, Client(t, mr)
}

// Client returns one more client of mr over in-memory pipes, closed when
// the test ends (before mr, when mr came from New). Call it inside the
// synctest bubble that uses it.
func Client(t testing.TB, mr *miniredis.Miniredis) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{
		Addr:   "127.0.0.1:6379", // never dialed; an IP, so nothing resolves it
		Dialer: func(context.Context, string, string) (net.Conn, error) { return mr.Dial() },
	})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}
