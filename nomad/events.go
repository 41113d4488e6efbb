package nomad

import (
	"context"
	"sync"

	"github.com/thawhq/thaw/fleet"
)

// eventQueue delivers instance reports in order without ever blocking the
// sender: push appends to an unbounded queue and run moves reports to the
// channel as the reader takes them, so the runtime reports while holding
// its mutex and a slow reader never stalls the Nomad watcher.
type eventQueue struct {
	ch  chan fleet.Instance
	sig chan struct{} // capacity 1: "the queue may be non-empty"

	// mu guards q.
	mu sync.Mutex
	q  []fleet.Instance
}

func newEventQueue() *eventQueue {
	return &eventQueue{ch: make(chan fleet.Instance, 256), sig: make(chan struct{}, 1)}
}

// push queues ev; it never blocks for long, so it is safe under any lock.
func (e *eventQueue) push(ev fleet.Instance) {
	e.mu.Lock()
	e.q = append(e.q, ev)
	e.mu.Unlock()
	select {
	case e.sig <- struct{}{}:
	default:
	}
}

// run moves queued reports to the channel until ctx is done.
func (e *eventQueue) run(ctx context.Context) {
	for {
		select {
		case <-e.sig:
		case <-ctx.Done():
			return
		}
		for {
			e.mu.Lock()
			if len(e.q) == 0 {
				e.q = nil
				e.mu.Unlock()
				break
			}
			ev := e.q[0]
			e.q = e.q[1:]
			e.mu.Unlock()
			select {
			case e.ch <- ev:
			case <-ctx.Done():
				return
			}
		}
	}
}
