package proxy

import (
	"container/list"
	"context"
	"errors"
	"sync"
	"time"

	"github.com/thawhq/thaw/httperr"
)

// Errors of acquire. handler.go maps them to HTTP statuses in one place.
var (
	// ErrQueueFull: the deployment already holds MaxHeld requests.
	ErrQueueFull = errors.New("too many requests waiting for this deployment")
	// ErrHoldTimeout: no capacity came within the hold timeout.
	ErrHoldTimeout = errors.New("no capacity became available within the hold timeout")
	// ErrGone: the deployment was deleted while the request waited.
	ErrGone = errors.New("deployment was deleted")
)

// FailedError is returned to held and new requests while the deployment is
// marked failed (crash loop, bad weights).
type FailedError struct{ Reason string }

func (e *FailedError) Error() string { return e.Reason }

// DemandSink receives per-deployment demand whenever it changes, and wake-ups
// when a request arrives that no ready instance can take. Implementations
// must not block: Set is called with the pool's lock held.
type DemandSink interface {
	Set(deployID string, held, inflight int)
	Wake(deployID string)
}

// endpoint is one ready instance and its concurrency slots.
type endpoint struct {
	id       string
	addr     string
	inflight int
	removed  bool // out of load balancing; kept until inflight is 0
	// refusedAt is when it last refused a connection; it is not picked
	// for refusedFor after that.
	refusedAt time.Time
	// hungUpAt is when it last closed a kept-alive connection under a
	// request; for refusedFor after that it is picked only when no other
	// has a free slot (it may be dead, or only have closed an idle
	// connection).
	hungUpAt time.Time
	drained  chan struct{} // closed when removed and inflight == 0
}

// waiter is one held request. ch receives the endpoint it may use (buffered
// so the dispatcher never blocks), or nil when the request is turned away:
// then err, set before the send, says why.
type waiter struct {
	ch  chan *endpoint
	err error
	el  *list.Element
}

// pool holds one deployment's endpoints and waiters.
type pool struct {
	id   string
	sink DemandSink

	// mu guards every field below.
	mu        sync.Mutex
	capacity  int // per endpoint: max_batch_size
	endpoints map[string]*endpoint
	waiters   list.List // of *waiter, FIFO
	inflight  int
	failed    *FailedError
	// refused, when set, is what every request gets at once whatever the
	// deployment's health (its owner is over their spending limit).
	// Independent of failed: each is set and cleared on its own.
	refused *httperr.Error
	gone    bool
}

func newPool(id string, sink DemandSink) *pool {
	return &pool{id: id, sink: sink, capacity: 1, endpoints: map[string]*endpoint{}}
}

// lease is one slot on an endpoint. Release gives it back; it may be called
// any number of times, so callers defer it and a panic or an early return
// cannot leak the slot.
type lease struct {
	pool *pool
	ep   *endpoint
	once sync.Once
}

// Release frees the slot and hands it to the next waiter, once.
func (l *lease) Release() { l.once.Do(func() { l.pool.free(l.ep) }) }

// queueing is what acquire tells about a request's wait.
type queueing struct {
	held bool // the request waited in the queue
	cold bool // it arrived with no ready instance
}

// acquire returns a lease on an endpoint with a free slot, holding the
// caller in FIFO order until one frees, ctx is done, or hold expires. The
// caller must Release the lease (defer it). The queueing is valid with an
// error too.
func (p *pool) acquire(ctx context.Context, hold time.Duration, maxHeld int) (*lease, queueing, error) {
	p.mu.Lock()
	if err := p.turnedAwayLocked(); err != nil {
		// A failed deployment is still demand: it stays wanted, so the
		// fleet goes on retrying (with backoff) and can recover by
		// itself. A gone or refused one is not.
		wake := !p.gone && p.refused == nil
		p.mu.Unlock()
		if wake {
			p.sink.Wake(p.id)
		}
		return nil, queueing{}, err
	}
	if p.waiters.Len() == 0 {
		if ep := p.pickLocked(); ep != nil {
			p.takeLocked(ep)
			p.mu.Unlock()
			return p.lease(ep), queueing{}, nil
		}
	}
	if p.waiters.Len() >= maxHeld {
		p.mu.Unlock()
		return nil, queueing{}, ErrQueueFull
	}
	g := queueing{held: true, cold: p.readyCountLocked() == 0}
	w := &waiter{ch: make(chan *endpoint, 1)}
	w.el = p.waiters.PushBack(w)
	p.reportLocked()
	p.mu.Unlock()
	p.sink.Wake(p.id)
	ep, err := p.wait(ctx, w, hold)
	if err != nil {
		return nil, g, err
	}
	return p.lease(ep), g, nil
}

func (p *pool) lease(ep *endpoint) *lease { return &lease{pool: p, ep: ep} }

// wait waits for w's endpoint; on ctx done or hold expired it takes w out of
// the queue, giving back a slot handed to it meanwhile.
func (p *pool) wait(ctx context.Context, w *waiter, hold time.Duration) (*endpoint, error) {
	timer := time.NewTimer(hold)
	defer timer.Stop()
	var err error
	select {
	case ep := <-w.ch:
		if ep == nil {
			return nil, w.err
		}
		return ep, nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-timer.C:
		err = ErrHoldTimeout
	}
	p.mu.Lock()
	if w.el != nil {
		p.waiters.Remove(w.el)
		w.el = nil
		p.reportLocked()
		p.mu.Unlock()
		return nil, err
	}
	p.mu.Unlock()
	// The dispatcher handed us an endpoint at the same moment.
	if ep := <-w.ch; ep != nil {
		p.free(ep)
	}
	return nil, err
}

// turnedAwayLocked returns the error requests get at once instead of
// being held, or nil. A refusal comes before a failure: the user could not
// be served even by a healthy deployment. Called with mu held.
func (p *pool) turnedAwayLocked() error {
	switch {
	case p.gone:
		return ErrGone
	case p.refused != nil:
		return p.refused
	case p.failed != nil:
		return p.failed
	}
	return nil
}

// free frees ep's slot and hands it to the next waiter. Only lease.Release
// and wait call it.
func (p *pool) free(ep *endpoint) {
	p.mu.Lock()
	ep.inflight--
	p.inflight--
	if ep.removed && ep.inflight == 0 {
		close(ep.drained)
		if p.endpoints[ep.id] == ep {
			delete(p.endpoints, ep.id)
		}
	}
	p.dispatchLocked()
	p.reportLocked()
	p.mu.Unlock()
}

// refusedFor is how long an endpoint that refused a connection is left
// out: long enough for the fleet to see a dead instance go (a process exit,
// a Nomad event) and requests to be held for its replacement instead of
// failing on it again.
const refusedFor = 2 * time.Second

// pickLocked returns the routable endpoint with the most free slots, or nil.
// Endpoints that recently refused a connection are skipped; those that
// recently hung up on a request come last.
func (p *pool) pickLocked() *endpoint {
	var best *endpoint
	var bestHungUp bool
	now := time.Now()
	for _, ep := range p.endpoints {
		if ep.removed || ep.inflight >= p.capacity || recent(ep.refusedAt, now) {
			continue
		}
		hungUp := recent(ep.hungUpAt, now)
		if best == nil || (bestHungUp && !hungUp) || (hungUp == bestHungUp && ep.inflight < best.inflight) {
			best, bestHungUp = ep, hungUp
		}
	}
	return best
}

// recent says whether t is set and less than refusedFor before now.
func recent(t, now time.Time) bool { return !t.IsZero() && now.Sub(t) < refusedFor }

// failedBefore records that ep failed a request before answering: refused its
// connection, or hung up a kept-alive one. Requests held meanwhile are
// offered a refusing endpoint again once refusedFor has passed.
func (p *pool) failedBefore(ep *endpoint, refused bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !refused {
		ep.hungUpAt = time.Now()
		return
	}
	ep.refusedAt = time.Now()
	time.AfterFunc(refusedFor, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.dispatchLocked()
		p.reportLocked()
	})
}

func (p *pool) takeLocked(ep *endpoint) {
	ep.inflight++
	p.inflight++
	p.reportLocked()
}

// dispatchLocked hands free slots to waiters in FIFO order.
func (p *pool) dispatchLocked() {
	for p.waiters.Len() > 0 {
		ep := p.pickLocked()
		if ep == nil {
			return
		}
		w := p.waiters.Remove(p.waiters.Front()).(*waiter)
		w.el = nil
		ep.inflight++
		p.inflight++
		w.ch <- ep
	}
}

func (p *pool) readyCountLocked() int {
	n := 0
	for _, ep := range p.endpoints {
		if !ep.removed {
			n++
		}
	}
	return n
}

func (p *pool) reportLocked() {
	p.sink.Set(p.id, p.waiters.Len(), p.inflight)
}

// set replaces the routable endpoints (id -> addr) and per-endpoint capacity,
// then releases waiters onto any new capacity at once.
func (p *pool) set(capacity int, addrs map[string]string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if capacity < 1 {
		capacity = 1
	}
	p.capacity = capacity
	for id, ep := range p.endpoints {
		if _, ok := addrs[id]; ok || ep.removed {
			continue
		}
		ep.removed = true
		if ep.inflight == 0 {
			close(ep.drained)
			delete(p.endpoints, id)
		}
	}
	for id, addr := range addrs {
		if ep, ok := p.endpoints[id]; ok {
			// Back from draining before it emptied: route to it again
			// (its drained channel is still open: inflight > 0).
			ep.removed = false
			continue
		}
		p.endpoints[id] = &endpoint{id: id, addr: addr, drained: make(chan struct{})}
	}
	if len(addrs) > 0 {
		p.failed = nil
	}
	p.dispatchLocked()
	p.reportLocked()
}

// drained returns a channel closed when instance id has no request in flight
// and is out of load balancing (or unknown).
func (p *pool) drainedCh(id string) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	ep, ok := p.endpoints[id]
	if !ok {
		c := make(chan struct{})
		close(c)
		return c
	}
	return ep.drained
}

// fail rejects every held request and new ones with reason.
func (p *pool) fail(reason string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failed = &FailedError{Reason: reason}
	p.rejectAllLocked()
}

func (p *pool) recover() {
	p.mu.Lock()
	p.failed = nil
	p.mu.Unlock()
}

// refuse answers every held request and new ones with err, until unrefuse.
func (p *pool) refuse(err *httperr.Error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refused = err
	p.rejectAllLocked()
}

func (p *pool) unrefuse() {
	p.mu.Lock()
	p.refused = nil
	p.mu.Unlock()
}

// remove marks the pool gone and rejects its waiters.
func (p *pool) remove() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gone = true
	p.rejectAllLocked()
	for id, ep := range p.endpoints {
		if !ep.removed {
			ep.removed = true
			if ep.inflight == 0 {
				close(ep.drained)
				delete(p.endpoints, id)
			}
		}
	}
	p.sink.Set(p.id, 0, p.inflight)
}

// rejectAllLocked turns every held request away with turnedAwayLocked's
// error. Called with mu held, after setting gone, refused or failed.
func (p *pool) rejectAllLocked() {
	err := p.turnedAwayLocked()
	for p.waiters.Len() > 0 {
		w := p.waiters.Remove(p.waiters.Front()).(*waiter)
		w.el = nil
		w.err = err
		w.ch <- nil
	}
	p.reportLocked()
}

// counts reports held and in-flight requests.
func (p *pool) counts() (held, inflight int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waiters.Len(), p.inflight
}
