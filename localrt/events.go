package localrt

import (
	"context"
	"sync"

	"github.com/thawhq/thaw/fleet"
)

// eventBuffer is the size of the Events channel.
const eventBuffer = 1024

// eventQueue delivers instance reports in order without ever blocking the
// sender: push appends to an unbounded queue, and a pump goroutine (run)
// moves reports from the queue to the channel as the reader takes them. So
// the runtime can report while it holds its own mutex, and a slow reader
// delays its reports but never the runtime.
type eventQueue struct {
	ch  chan fleet.Instance
	sig chan struct{} // capacity 1: "the queue may be non-empty"

	// mu guards q.
	mu sync.Mutex
	q  []fleet.Instance
}

func newEventQueue() *eventQueue {
	return &eventQueue{
		ch:  make(chan fleet.Instance, eventBuffer),
		sig: make(chan struct{}, 1),
	}
}

// push queues ev for delivery. It never blocks for long: safe to call with
// any lock held.
func (e *eventQueue) push(ev fleet.Instance) {
	e.mu.Lock()
	e.q = append(e.q, ev)
	e.mu.Unlock()
	select {
	case e.sig <- struct{}{}:
	default:
	}
}

// pop removes and returns the oldest queued report.
func (e *eventQueue) pop() (fleet.Instance, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.q) == 0 {
		return fleet.Instance{}, false
	}
	ev := e.q[0]
	e.q[0] = fleet.Instance{}
	e.q = e.q[1:]
	if len(e.q) == 0 {
		e.q = nil // let the backing array go
	}
	return ev, true
}

// unpop puts ev back at the head of the queue.
func (e *eventQueue) unpop(ev fleet.Instance) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.q = append([]fleet.Instance{ev}, e.q...)
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
			ev, ok := e.pop()
			if !ok {
				break
			}
			select {
			case e.ch <- ev:
			case <-ctx.Done():
				e.unpop(ev)
				return
			}
		}
	}
}

// flush moves queued reports to the channel while it has room, without
// blocking. Run calls it last, so that the reports of its shutdown reach a
// reader that still reads.
func (e *eventQueue) flush() {
	for {
		ev, ok := e.pop()
		if !ok {
			return
		}
		select {
		case e.ch <- ev:
		default:
			e.unpop(ev)
			return
		}
	}
}
