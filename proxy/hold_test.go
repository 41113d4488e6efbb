package proxy

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/routing"
)

func TestColdStart(t *testing.T) {
	h := newHarness(t, Config{})
	up := newUpstream(t, nil)
	ch := h.postAsync(context.Background(), "alice", "/v1/openai/chat/completions", chatBody)
	h.waitHeld("d1", 1)
	if n := h.sink.woken("d1"); n != 1 {
		t.Errorf("Wake(d1) called %d times, want 1", n)
	}
	if got := h.sink.get("d1"); got != (Load{Held: 1}) {
		t.Errorf("demand reported %v, want [1 held, 0 in flight]", got)
	}
	// Not a wait for a state: the hold must last long enough to show in
	// the cold-start header, which is rounded to the millisecond.
	time.Sleep(20 * time.Millisecond)
	// Still counted as held, so not answered: no instance is ready.
	if n := h.p.Counts()["d1"].Held; n != 1 {
		t.Fatalf("%d requests held for d1, want 1: answered while no instance was ready", n)
	}
	select {
	case r := <-ch:
		t.Fatalf("request answered while no instance was ready: %d %s", r.status, r.body)
	default:
	}

	start := time.Now()
	h.p.SetEndpoints("d1", 2, map[string]string{"i1": up.addr()})
	r := wait(t, ch, 2*time.Second)
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("released %s after SetEndpoints, want at once", d)
	}
	if r.status != http.StatusOK {
		t.Fatalf("status %d body %s", r.status, r.body)
	}
	cold, err := time.ParseDuration(r.header.Get(routing.ColdStartHeader))
	if err != nil || cold < 20*time.Millisecond {
		t.Errorf("%s = %q (%v), want the time held (>= 20ms)", routing.ColdStartHeader, r.header.Get(routing.ColdStartHeader), err)
	}
	eventually(t, "demand back to 0", func() bool { return h.sink.get("d1") == (Load{}) })
}

// blockingUpstream holds every request until release receives, recording
// the "seq" of each request in arrival order and the peak concurrency.
type blockingUpstream struct {
	*upstream
	arrived chan int
	release chan struct{}
	cur     atomic.Int32
	peak    atomic.Int32
}

func newBlockingUpstream(t *testing.T) *blockingUpstream {
	b := &blockingUpstream{arrived: make(chan int, 64), release: make(chan struct{})}
	b.upstream = newUpstream(t, func(w http.ResponseWriter, r *http.Request, body map[string]any) {
		n := b.cur.Add(1)
		defer b.cur.Add(-1)
		for {
			p := b.peak.Load()
			if n <= p || b.peak.CompareAndSwap(p, n) {
				break
			}
		}
		seq, _ := body["seq"].(float64)
		b.arrived <- int(seq)
		select {
		case <-b.release:
		case <-r.Context().Done():
			return
		case <-time.After(10 * time.Second):
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"seq":%d}`, int(seq))
	})
	return b
}

func (b *blockingUpstream) next(t *testing.T) int {
	t.Helper()
	select {
	case s := <-b.arrived:
		return s
	case <-time.After(3 * time.Second):
		t.Fatal("no request reached the model server")
		return 0
	}
}

func (b *blockingUpstream) releaseOne(t *testing.T) {
	t.Helper()
	select {
	case b.release <- struct{}{}:
	case <-time.After(3 * time.Second):
		t.Fatal("no request waiting at the model server to release")
	}
}

func seqBody(i int) string { return fmt.Sprintf(`{"model":"alice/m","seq":%d}`, i) }

// TestCapacityAndFIFO: at most max_batch_size requests reach an instance at
// once; the rest wait and are released in arrival order.
func TestCapacityAndFIFO(t *testing.T) {
	h := newHarness(t, Config{})
	up := newBlockingUpstream(t)
	h.p.SetEndpoints("d1", 2, map[string]string{"i1": up.addr()})
	var results []<-chan result
	for i := 1; i <= 2; i++ {
		results = append(results, h.postAsync(context.Background(), "alice", "/v1/chat/completions", seqBody(i)))
	}
	up.next(t)
	up.next(t)
	for i := 3; i <= 5; i++ {
		results = append(results, h.postAsync(context.Background(), "alice", "/v1/chat/completions", seqBody(i)))
		h.waitHeld("d1", i-2)
	}
	if diff := cmp.Diff(map[string]Load{"d1": {Held: 3, InFlight: 2}}, h.p.Counts()); diff != "" {
		t.Errorf("counts [held inflight] (-want +got):\n%s", diff)
	}
	if got := h.sink.get("d1"); got != (Load{Held: 3, InFlight: 2}) {
		t.Errorf("demand reported %v, want [3 2]", got)
	}
	var order []int
	for range 3 {
		up.releaseOne(t)
		order = append(order, up.next(t))
	}
	if diff := cmp.Diff([]int{3, 4, 5}, order); diff != "" {
		t.Errorf("held requests released out of order (-want +got):\n%s", diff)
	}
	up.releaseOne(t)
	up.releaseOne(t)
	for i, ch := range results {
		r := wait(t, ch, 3*time.Second)
		if want := fmt.Sprintf(`{"seq":%d}`, i+1); r.status != 200 || r.body != want {
			t.Errorf("request %d: %d %s, want 200 %s", i+1, r.status, r.body, want)
		}
		// The instance was ready throughout: the held ones only queued.
		if c := r.header.Get(routing.ColdStartHeader); c != "" {
			t.Errorf("request %d: %s = %q on a ready deployment", i+1, routing.ColdStartHeader, c)
		}
		if queued := r.header.Get(routing.QueueTimeHeader) != ""; queued != (i >= 2) {
			t.Errorf("request %d: %s present = %v, want %v", i+1, routing.QueueTimeHeader, queued, i >= 2)
		}
	}
	if p := up.peak.Load(); p != 2 {
		t.Errorf("peak concurrency at the instance = %d, want max_batch_size 2", p)
	}
}

func TestClientCancelWhileHeld(t *testing.T) {
	h := newHarness(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	ch := h.postAsync(ctx, "alice", "/v1/openai/chat/completions", chatBody)
	h.waitHeld("d1", 1)
	cancel()
	<-ch
	eventually(t, "held request to leave the queue", func() bool { return h.p.Counts()["d1"] == (Load{}) })
	eventually(t, "demand sink to see 0 held", func() bool { return h.sink.get("d1") == (Load{}) })

	// The slot it would have taken goes to the next request.
	up := newUpstream(t, nil)
	h.p.SetEndpoints("d1", 1, map[string]string{"i1": up.addr()})
	if r := h.post(context.Background(), "alice", "/v1/openai/chat/completions", chatBody); r.status != 200 {
		t.Errorf("next request: %d %s", r.status, r.body)
	}
	if n := len(up.seen()); n != 1 {
		t.Errorf("instance saw %d requests, want 1 (not the cancelled one)", n)
	}
}

func TestHoldTimeout(t *testing.T) {
	h := newHarness(t, Config{HoldTimeout: 100 * time.Millisecond})
	start := time.Now()
	r := h.post(context.Background(), "alice", "/v1/openai/chat/completions", chatBody)
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Errorf("answered after %s, before the hold timeout", d)
	}
	got, msg := errOf(t, r)
	want := apiErr{Status: 503, Type: "service_unavailable_error", Code: "no_capacity", RetryAfter: "30"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("error (-want +got):\n%s", diff)
	}
	if !strings.Contains(msg, "alice/m") {
		t.Errorf("message %q does not name the model", msg)
	}
	if c := h.p.Counts()["d1"]; c != (Load{}) {
		t.Errorf("counts after timeout = %v", c)
	}
}

func TestQueueFull(t *testing.T) {
	h := newHarness(t, Config{MaxHeld: 2})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first := h.postAsync(ctx, "alice", "/v1/openai/chat/completions", chatBody)
	second := h.postAsync(ctx, "alice", "/v1/openai/chat/completions", chatBody)
	h.waitHeld("d1", 2)
	got, _ := errOf(t, h.post(context.Background(), "alice", "/v1/openai/chat/completions", chatBody))
	want := apiErr{Status: 429, Type: "rate_limit_error", Code: "queue_full", RetryAfter: "1"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("error (-want +got):\n%s", diff)
	}
	// The held ones are still served.
	up := newUpstream(t, nil)
	h.p.SetEndpoints("d1", 2, map[string]string{"i1": up.addr()})
	for _, ch := range []<-chan result{first, second} {
		if r := wait(t, ch, 3*time.Second); r.status != 200 {
			t.Errorf("held request: %d %s", r.status, r.body)
		}
	}
}

func TestFailAndRecover(t *testing.T) {
	h := newHarness(t, Config{})
	held := h.holdChats(3)
	h.p.Fail("d1", "weights not found: org/x")
	want := apiErr{Status: 503, Type: "service_unavailable_error", Code: "deployment_failed", RetryAfter: "30"}
	for _, ch := range held {
		got, msg := errOf(t, wait(t, ch, time.Second))
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("held request (-want +got):\n%s", diff)
		}
		if !strings.Contains(msg, "weights not found: org/x") {
			t.Errorf("message %q does not carry the reason", msg)
		}
	}
	got, _ := errOf(t, h.post(context.Background(), "alice", "/v1/openai/chat/completions", chatBody))
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("new request while failed (-want +got):\n%s", diff)
	}
	if c := h.p.Counts()["d1"]; c != (Load{}) {
		t.Errorf("counts after fail = %v", c)
	}

	h.p.Recover("d1")
	ch := h.postAsync(context.Background(), "alice", "/v1/openai/chat/completions", chatBody)
	h.waitHeld("d1", 1)
	up := newUpstream(t, nil)
	h.p.SetEndpoints("d1", 1, map[string]string{"i1": up.addr()})
	if r := wait(t, ch, 3*time.Second); r.status != 200 {
		t.Errorf("after Recover: %d %s", r.status, r.body)
	}
}

func TestRemoveWhileHeld(t *testing.T) {
	h := newHarness(t, Config{})
	ch := h.postAsync(context.Background(), "alice", "/v1/openai/chat/completions", chatBody)
	h.waitHeld("d1", 1)
	h.p.Remove("d1")
	got, _ := errOf(t, wait(t, ch, time.Second))
	want := apiErr{Status: 404, Type: "not_found_error", Code: "model_not_found", Param: strp("model")}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("error (-want +got):\n%s", diff)
	}
	if _, ok := h.p.Counts()["d1"]; ok {
		t.Error("removed deployment still reported in Counts")
	}
}

// TestDraining: an instance leaving the set finishes its in-flight request,
// gets no new one, and is reported drained only after that request ends.
func TestDraining(t *testing.T) {
	h := newHarness(t, Config{})
	a := newBlockingUpstream(t)
	b := newUpstream(t, nil)
	h.p.SetEndpoints("d1", 1, map[string]string{"a": a.addr()})
	inflight := h.postAsync(context.Background(), "alice", "/v1/chat/completions", seqBody(1))
	a.next(t)

	h.p.SetEndpoints("d1", 1, map[string]string{"b": b.addr()})
	drained := h.p.Drained("d1", "a")
	select {
	case <-drained:
		t.Fatal("drained while a request is in flight")
	default:
	}
	var wg sync.WaitGroup
	for i := 2; i <= 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := h.post(context.Background(), "alice", "/v1/chat/completions", seqBody(i)); r.status != 200 {
				t.Errorf("request %d: %d %s", i, r.status, r.body)
			}
		}()
	}
	wg.Wait()
	if n := len(b.seen()); n != 3 {
		t.Errorf("new instance served %d requests, want 3", n)
	}
	if n := len(a.seen()); n != 1 {
		t.Errorf("draining instance got %d requests, want only the one in flight", n)
	}
	select {
	case <-drained:
		t.Fatal("drained while a request is in flight")
	default:
	}
	a.releaseOne(t)
	if r := wait(t, inflight, 3*time.Second); r.status != 200 || r.body != `{"seq":1}` {
		t.Errorf("in-flight request on the draining instance: %d %s", r.status, r.body)
	}
	select {
	case <-drained:
	case <-time.After(3 * time.Second):
		t.Fatal("not drained after its last request finished")
	}
	select {
	case <-h.p.Drained("d1", "gone"):
	default:
		t.Error("Drained of an unknown instance is not closed")
	}
}
