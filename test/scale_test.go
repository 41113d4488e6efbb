package test

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/thawhq/thaw/deploy"
)

// TestIdleScaleToZero: with --idle-timeout 2s a deployment at min 0 runs
// while it serves (a stream longer than the idle timeout is not cut), goes
// back to zero about the idle timeout after the last traffic, and the next
// request cold-starts it again.
func TestIdleScaleToZero(t *testing.T) {
	t.Parallel()
	const idle = 2 * time.Second
	p := startThaw(t, thawOpts{IdleTimeout: idle})
	name := uniqueName("idle")
	d := p.create(t, devToken, llmRequest(name, "A100-80GB", 1, 8, 0, 1))
	model := "dev/" + name

	r := p.chat(t, model, 4)
	if msg := checkChat(r, 4); msg != "" {
		t.Fatalf("first request: %s", msg)
	}
	if r.Header.Get(coldStartHeader) == "" {
		t.Errorf("first request at zero instances has no %s header", coldStartHeader)
	}
	if got := p.get(t, d.ID); got.Instances.Running < 1 {
		t.Errorf("right after a request: %s, want running >= 1", instancesOf(got))
	}

	// 600 tokens at 200 tokens/s: a 3s stream, longer than the idle timeout.
	start := time.Now()
	_, events := p.stream(t, "/v1/openai/chat/completions", chatBody(model, 600, true))
	if len(events) < 2 || events[len(events)-1].data != "[DONE]" {
		t.Fatalf("a stream longer than the idle timeout was cut after %v: %d events", time.Since(start), len(events))
	}
	if took := time.Since(start); took < 2500*time.Millisecond {
		t.Errorf("600 tokens at 200 tokens/s streamed in %v; expected about 3s", took)
	}
	lastTraffic := time.Now()

	got := p.waitDeploy(t, d.ID, 20*time.Second, "scaled to zero", func(d deploy.View) bool {
		return d.Instances.Running == 0 && d.Instances.Pending == 0
	})
	after := time.Since(lastTraffic)
	t.Logf("scaled to zero %v after the last traffic (%s)", after, instancesOf(got))
	if after < idle*3/4 {
		t.Errorf("scaled to zero %v after the last traffic, before the idle timeout %v", after, idle)
	}

	r = p.chat(t, model, 4)
	if msg := checkChat(r, 4); msg != "" {
		t.Fatalf("request after scale to zero: %s", msg)
	}
	if r.Header.Get(coldStartHeader) == "" {
		t.Errorf("request after scale to zero has no %s header: it should have waited for a cold start", coldStartHeader)
	}
}

// TestHoldTimeout: when no capacity can come (no GPU of the type in the
// inventory), a request waits about --hold-timeout and then gets 503 or 429
// with Retry-After and OpenAI's error shape.
func TestHoldTimeout(t *testing.T) {
	t.Parallel()
	p := startThaw(t, thawOpts{HoldTimeout: time.Second, GPUs: "A100-80GB:0,H100-80GB:1"})
	name := uniqueName("hold")
	p.create(t, devToken, llmRequest(name, "A100-80GB", 1, 8, 0, 1))

	start := time.Now()
	r := p.chat(t, "dev/"+name, 4)
	took := time.Since(start)
	checkError(t, "request with no capacity", r, []int{http.StatusServiceUnavailable, http.StatusTooManyRequests}, "")
	ra := r.Header.Get("Retry-After")
	if ra == "" {
		t.Errorf("no Retry-After header: %v", r.Header)
	} else if _, err := strconv.Atoi(ra); err != nil {
		if _, err := http.ParseTime(ra); err != nil {
			t.Errorf("Retry-After %q is neither seconds nor an HTTP date", ra)
		}
	}
	t.Logf("answered %d after %v", r.Status, took)
	if took < 800*time.Millisecond || took > 5*time.Second {
		t.Errorf("answered after %v, want about the hold timeout (1s)", took)
	}
}

// TestHeldClientDisconnect: a client that gives up while its request is
// held leaves the queue at once (the held-requests gauge drops to 0 long
// before the instance is up), and the queue is not left blocked by it.
func TestHeldClientDisconnect(t *testing.T) {
	t.Parallel()
	p := startThaw(t, thawOpts{SimStartup: 3 * time.Second})
	name := uniqueName("leave")
	d := p.create(t, devToken, llmRequest(name, "A100-80GB", 1, 1, 0, 1))
	keys := []string{d.ID, name}

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	sent := time.Now()
	go func() {
		_, err := p.doCtx(ctx, http.MethodPost, "/v1/openai/chat/completions", devToken, chatBody("dev/"+name, 4, false))
		errc <- err
	}()

	var held float64
	sawHeld := waitFor(time.Second, 25*time.Millisecond, func() bool {
		held, _ = heldGauge(p.scrape(t), keys)
		return held >= 1
	})
	if !sawHeld {
		cancel()
		t.Fatalf("a request held for a cold start never showed in /metrics (no gauge named *held* for %s >= 1); samples with held:\n%s",
			name, rawLines(findMetrics(p.scrape(t), []string{""}, "held")))
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("the cancelled request ended with %v, want context.Canceled (was it answered while cold?)", err)
	}
	cancelled := time.Now()

	var left float64
	gone := waitFor(500*time.Millisecond, 20*time.Millisecond, func() bool {
		left, _ = heldGauge(p.scrape(t), keys)
		return left == 0
	})
	if !gone {
		t.Errorf("held requests still %v, 500ms after the client left", left)
	}
	t.Logf("held gauge back to 0 %v after the client left", time.Since(cancelled))
	if time.Since(sent) > 2500*time.Millisecond {
		t.Errorf("could not check before the 3s cold start completed (%v); the drop may be the release, not the disconnect", time.Since(sent))
	}

	// The abandoned request must not hold the only slot (max_batch_size 1).
	ctx2, cancel2 := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel2()
	r, err := p.doCtx(ctx2, http.MethodPost, "/v1/openai/chat/completions", devToken, chatBody("dev/"+name, 4, false))
	if err != nil {
		t.Fatalf("request after the abandoned one: %v", err)
	}
	if msg := checkChat(r, 4); msg != "" {
		t.Fatalf("request after the abandoned one: %s", msg)
	}
	if held, _ := heldGauge(p.scrape(t), keys); held != 0 {
		t.Errorf("held requests %v after all requests finished", held)
	}
}
