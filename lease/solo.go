package lease

import (
	"context"
	"sync"
	"time"
)

// soloTTL is Solo's TTL: it only sets how often a Lease renews a lock that
// nobody else can take.
const soloTTL = time.Minute

// Solo returns a Locker that nobody else shares, for thaw dev: the one
// process always wins, and Holder names it while it holds the lock.
func Solo(id string) Locker { return &solo{id: id} }

type solo struct {
	id   string
	mu   sync.Mutex // mu guards held.
	held bool
}

func (s *solo) Acquire(context.Context) error { s.set(true); return nil }
func (s *solo) Renew(context.Context) error   { return nil }
func (s *solo) Release(context.Context) error { s.set(false); return nil }
func (s *solo) TTL() time.Duration            { return soloTTL }

func (s *solo) Holder(context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held {
		return s.id, nil
	}
	return "", nil
}

func (s *solo) set(held bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.held = held
}
