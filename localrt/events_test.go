package localrt

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/thawhq/thaw/fleet"
)

func TestEventQueueNeverBlocksAndKeepsOrder(t *testing.T) {
	e := newEventQueue()
	const n = 3 * eventBuffer
	pushed := make(chan struct{})
	go func() {
		defer close(pushed)
		for i := range n {
			e.push(fleet.Instance{ID: fmt.Sprint(i)})
		}
	}()
	select {
	case <-pushed:
	case <-time.After(5 * time.Second):
		t.Fatalf("push blocked with no reader and no pump")
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.run(ctx)
	}()
	for i := range n {
		select {
		case ev := <-e.ch:
			if ev.ID != fmt.Sprint(i) {
				t.Fatalf("report %d has ID %s: out of order", i, ev.ID)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("report %d not delivered", i)
		}
	}
	cancel()
	<-done

	// After the pump stops, flush delivers what fits and keeps the rest.
	for i := range eventBuffer + 1 {
		e.push(fleet.Instance{ID: fmt.Sprint(i)})
	}
	e.flush()
	if len(e.ch) != eventBuffer {
		t.Errorf("flush filled the channel with %d reports, want %d", len(e.ch), eventBuffer)
	}
	if ev, ok := e.pop(); !ok || ev.ID != fmt.Sprint(eventBuffer) {
		t.Errorf("left in queue: %+v, %v; want report %d", ev, ok, eventBuffer)
	}
}
