package fleet

import (
	"context"
	"sync"
)

// EventQueue is what a Runtime needs for its Events channel: it delivers
// instance reports in order without ever blocking the sender. Push appends
// to an unbounded queue, and a pump goroutine (Pump) moves reports from the
// queue to the channel as the reader takes them. So the runtime can report
// while it holds its own mutex, and a slow reader delays its reports but
// never the runtime.
type EventQueue struct {
	ch  chan Instance
	sig chan struct{} // capacity 1: "the queue may be non-empty"

	// mu guards q.
	mu sync.Mutex
	q  []Instance
}

// NewEventQueue returns a queue whose channel holds buffer reports.
func NewEventQueue(buffer int) *EventQueue {
	return &EventQueue{
		ch:  make(chan Instance, buffer),
		sig: make(chan struct{}, 1),
	}
}

// Events is the channel the reports are delivered on: Runtime.Events.
func (e *EventQueue) Events() <-chan Instance { return e.ch }

// Push queues ev for delivery. It never blocks for long: safe to call with
// any lock held.
func (e *EventQueue) Push(ev Instance) {
	e.mu.Lock()
	e.q = append(e.q, ev)
	e.mu.Unlock()
	select {
	case e.sig <- struct{}{}:
	default:
	}
}

// pop removes and returns the oldest queued report.
func (e *EventQueue) pop() (Instance, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.q) == 0 {
		return Instance{}, false
	}
	ev := e.q[0]
	e.q[0] = Instance{}
	e.q = e.q[1:]
	if len(e.q) == 0 {
		e.q = nil // let the backing array go
	}
	return ev, true
}

// unpop puts ev back at the head of the queue.
func (e *EventQueue) unpop(ev Instance) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.q = append([]Instance{ev}, e.q...)
}

// Pump moves queued reports to the channel until ctx is done; a report
// the reader has not taken by then stays queued (see Flush).
func (e *EventQueue) Pump(ctx context.Context) {
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

// Flush moves queued reports to the channel while it has room, without
// blocking. A runtime's Run calls it last, after Pump has stopped, so that
// the reports of its shutdown reach a reader that still reads.
func (e *EventQueue) Flush() {
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
