package meter

import (
	"context"
	"sync"
	"time"
)

// queue holds what one goroutine writes to the database off the callers'
// path, in the order it was pushed, retried in order while the database
// is down: the Writer's facts and the Journal's events.
type queue[T any] struct {
	sig chan struct{} // capacity 1: "the queue may be non-empty"

	mu    sync.Mutex // guards items
	items []T
}

func newQueue[T any]() *queue[T] {
	return &queue[T]{sig: make(chan struct{}, 1)}
}

// push appends v unless the queue already holds limit items (limit <= 0:
// no limit), and wakes run. It never blocks; it reports whether v was
// queued.
func (q *queue[T]) push(v T, limit int) bool {
	q.mu.Lock()
	if limit > 0 && len(q.items) >= limit {
		q.mu.Unlock()
		return false
	}
	q.items = append(q.items, v)
	q.mu.Unlock()
	select {
	case q.sig <- struct{}{}:
	default:
	}
	return true
}

// len is how many items wait to be written.
func (q *queue[T]) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

// drain writes the items in order with write until the queue is empty or
// ctx is done. An item write fails for stays at the head and is retried
// after a pause (100 ms, doubling up to 5 s); to give up on an item, write
// returns nil.
func (q *queue[T]) drain(ctx context.Context, write func(context.Context, T) error) {
	wait := 100 * time.Millisecond
	for {
		q.mu.Lock()
		if len(q.items) == 0 {
			q.items = nil
			q.mu.Unlock()
			return
		}
		v := q.items[0]
		q.mu.Unlock()
		if err := write(ctx, v); err != nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			wait = min(2*wait, 5*time.Second)
			continue
		}
		q.mu.Lock()
		var zero T
		q.items[0] = zero
		q.items = q.items[1:]
		q.mu.Unlock()
	}
}

// run calls drain whenever an item is pushed, and tick at start and then
// every period, until ctx is done; it then calls drain once more with a
// 5 s grace, so that a clean shutdown loses nothing queued. It returns nil.
func (q *queue[T]) run(ctx context.Context, every time.Duration, kick <-chan struct{}, drain, tick func(context.Context)) error {
	ticker := time.NewTicker(every)
	defer ticker.Stop()
	tick(ctx)
	for {
		select {
		case <-ctx.Done():
			grace, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			drain(grace)
			return nil
		case <-q.sig:
			drain(ctx)
		case <-ticker.C:
			tick(ctx)
		case <-kick:
			tick(ctx)
		}
	}
}
