package sim

import (
	"context"
	"sync"
)

// limiter admits at most max holders at once and queues the rest in FIFO
// order, like vLLM's scheduler with --max-num-seqs. A waiter whose context
// ends leaves the queue at once; nobody is ever rejected.
type limiter struct {
	max int

	// mu guards running and queue.
	mu      sync.Mutex
	running int
	// queue holds one channel per waiter, oldest first. A channel is closed
	// when its waiter is handed a slot (running is not decremented then:
	// the slot passes straight from the releaser to the waiter).
	queue []chan struct{}
}

func newLimiter(max int) *limiter {
	return &limiter{max: max}
}

// acquire blocks until the caller holds a slot or ctx is done. On success
// the caller must call release exactly once.
func (l *limiter) acquire(ctx context.Context) error {
	l.mu.Lock()
	if l.running < l.max && len(l.queue) == 0 {
		l.running++
		l.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	l.queue = append(l.queue, ch)
	l.mu.Unlock()

	select {
	case <-ch:
		return nil
	case <-ctx.Done():
	}

	l.mu.Lock()
	for i, c := range l.queue {
		if c == ch {
			l.queue = append(l.queue[:i], l.queue[i+1:]...)
			l.mu.Unlock()
			return ctx.Err()
		}
	}
	l.mu.Unlock()
	// The slot was handed over while ctx ended: pass it on.
	l.release()
	return ctx.Err()
}

// release gives the caller's slot to the oldest waiter, or frees it.
func (l *limiter) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.queue) > 0 {
		close(l.queue[0])
		l.queue[0] = nil
		l.queue = l.queue[1:]
		return
	}
	l.running--
}

// counts reports how many callers hold a slot and how many wait, read
// together so that they are consistent with each other.
func (l *limiter) counts() (running, waiting int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.running, len(l.queue)
}
