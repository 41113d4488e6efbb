package fleet

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
)

// TestEventQueueNeverBlocksAndKeepsOrder runs in a synctest bubble (the
// queue is channels and a mutex): synctest.Wait returns once the pusher and
// the pump are done or blocked, so a blocked push or an undelivered report
// shows at once, with no timer.
func TestEventQueueNeverBlocksAndKeepsOrder(t *testing.T) {
	synctest.Test(t, testEventQueueNeverBlocksAndKeepsOrder)
}

func testEventQueueNeverBlocksAndKeepsOrder(t *testing.T) {
	const eventBuffer = 1024
	e := NewEventQueue(eventBuffer)
	const n = 3 * eventBuffer
	pushed := make(chan struct{})
	go func() {
		defer close(pushed)
		for i := range n {
			e.Push(Instance{ID: fmt.Sprint(i)})
		}
	}()
	synctest.Wait()
	select {
	case <-pushed:
	default:
		t.Fatalf("push blocked with no reader and no pump")
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.Pump(ctx)
	}()
	for i := range n {
		synctest.Wait()
		select {
		case ev := <-e.ch:
			if ev.ID != fmt.Sprint(i) {
				t.Fatalf("report %d has ID %s: out of order", i, ev.ID)
			}
		default:
			t.Fatalf("report %d not delivered", i)
		}
	}
	cancel()
	<-done

	// After the pump stops, flush delivers what fits and keeps the rest.
	for i := range eventBuffer + 1 {
		e.Push(Instance{ID: fmt.Sprint(i)})
	}
	e.Flush()
	if len(e.ch) != eventBuffer {
		t.Errorf("flush filled the channel with %d reports, want %d", len(e.ch), eventBuffer)
	}
	if ev, ok := e.pop(); !ok || ev.ID != fmt.Sprint(eventBuffer) {
		t.Errorf("left in queue: %+v, %v; want report %d", ev, ok, eventBuffer)
	}
}
