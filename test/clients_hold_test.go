package test

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestClientHoldHeaders: X-Thaw-Hold-Timeout lowers one request's hold
// ("300ms": 503 with Retry-After at once, not after --hold-timeout), never
// raises it ("99h": 503 after --hold-timeout), and an invalid value is a
// 400 naming the header. X-Thaw-Cold-Start is on an answer that waited for
// an instance to start and on no other; X-Thaw-Queue-Time on one that
// waited for a busy slot of a ready deployment.
func TestClientHoldHeaders(t *testing.T) {
	const hold = 8 * time.Second
	p := startThaw(t, thawOpts{HoldTimeout: hold, SimStartup: time.Second, TokensPerSecond: 20, GPUs: "A100-80GB:8,H100-80GB:0"})
	// No H100 in the inventory: this deployment never gets an instance.
	never := "dev/" + uniqueName("nogpu")
	p.create(t, devToken, llmRequest(strings.TrimPrefix(never, "dev/"), "H100-80GB", 1, 2, 0, 1))
	name := uniqueName("waits")
	d := p.create(t, devToken, llmRequest(name, "A100-80GB", 1, 1, 0, 1))
	model := "dev/" + name

	t.Run("X-Thaw-Hold-Timeout", func(t *testing.T) {
		send := func(v string) <-chan outcome {
			return timed(func() (response, error) {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				return p.postRead(ctx, chatPath, "", chatBody(never, 4, false), "X-Thaw-Hold-Timeout", v)
			})
		}
		short, long := send("300ms"), send("99h")

		for _, path := range []string{chatPath, "/v1/inference/" + never} {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			body := any(chatBody(never, 4, false))
			if path != chatPath {
				body = nativeReq(4)
			}
			r, err := p.postRead(ctx, path, "", body, "X-Thaw-Hold-Timeout", "bogus")
			cancel()
			if err != nil {
				t.Fatalf("%s with X-Thaw-Hold-Timeout: bogus: %v", path, err)
			}
			checkError(t, path+" with X-Thaw-Hold-Timeout: bogus", r, []int{http.StatusBadRequest}, "X-Thaw-Hold-Timeout")
		}

		o := <-short
		switch {
		case o.err != nil:
			t.Errorf("X-Thaw-Hold-Timeout: 300ms: %v", o.err)
		case o.took > 5*time.Second:
			t.Errorf("X-Thaw-Hold-Timeout: 300ms answered after %v; the hold was not lowered (--hold-timeout %v)", o.took, hold)
		default:
			checkError(t, "X-Thaw-Hold-Timeout: 300ms", o.r, []int{http.StatusServiceUnavailable}, "")
			checkRetryAfter(t, "X-Thaw-Hold-Timeout: 300ms", o.r)
			t.Logf("300ms: HTTP %d after %v", o.r.Status, o.took)
		}
		o = <-long
		switch {
		case o.err != nil:
			t.Errorf("X-Thaw-Hold-Timeout: 99h: %v", o.err)
		case o.took < hold-time.Second || o.took > hold+10*time.Second:
			t.Errorf("X-Thaw-Hold-Timeout: 99h answered after %v, want after --hold-timeout %v", o.took, hold)
		default:
			checkError(t, "X-Thaw-Hold-Timeout: 99h", o.r, []int{http.StatusServiceUnavailable}, "")
			checkRetryAfter(t, "X-Thaw-Hold-Timeout: 99h", o.r)
			t.Logf("99h: HTTP %d after %v", o.r.Status, o.took)
		}
	})

	t.Run("cold start and queue time", func(t *testing.T) {
		ask := func(what string) response {
			t.Helper()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			r, err := p.postRead(ctx, chatPath, "", chatBody(model, 2, false))
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			if msg := checkChat(r, 2); msg != "" {
				t.Fatalf("%s: %s", what, msg)
			}
			return r
		}
		r := ask("cold request")
		if v := r.Header.Get(coldStartHeader); v == "" {
			t.Errorf("a request that waited for the 1s cold start has no %s", coldStartHeader)
		} else if w, ok := parseColdStart(v); !ok || w < 500*time.Millisecond {
			t.Errorf("%s: %q after a 1s cold start", coldStartHeader, v)
		}
		if v := r.Header.Get("X-Thaw-Queue-Time"); v != "" {
			t.Errorf("a cold request has X-Thaw-Queue-Time %q", v)
		}

		r = ask("request to a ready deployment with a free slot")
		for _, h := range []string{coldStartHeader, "X-Thaw-Queue-Time"} {
			if v := r.Header.Get(h); v != "" {
				t.Errorf("a request that did not wait has %s: %q", h, v)
			}
		}

		// max_batch_size 1: a 40-token stream (2s) takes the only slot.
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		resp, err := p.post(ctx, chatPath, "", chatBody(model, 40, true))
		if err != nil {
			t.Fatalf("stream: %v", err)
		}
		defer resp.Body.Close()
		if ev, err := readEvents(bufio.NewReader(resp.Body), 1); err != nil {
			t.Fatalf("stream: no first event (%v): %q", err, ev)
		}
		go func() { _, _ = io.Copy(io.Discard, resp.Body) }()
		if in, _, _ := p.slotGauges(t, d.ID); in != 1 {
			t.Fatalf("thaw_requests_inflight %v while one stream runs, want 1", in)
		}
		r = ask("request queued behind the busy slot")
		if v := r.Header.Get("X-Thaw-Queue-Time"); v == "" {
			t.Errorf("a request that queued behind a busy slot has no X-Thaw-Queue-Time")
		} else if w, ok := parseColdStart(v); !ok || w < 500*time.Millisecond {
			t.Errorf("X-Thaw-Queue-Time %q for a request queued behind a 2s stream", v)
		}
		if v := r.Header.Get(coldStartHeader); v != "" {
			t.Errorf("a request that queued on a ready deployment has %s %q: no instance started for it", coldStartHeader, v)
		}
	})
}

// checkRetryAfter asserts r has a Retry-After header of seconds or a date.
func checkRetryAfter(t *testing.T, what string, r response) {
	t.Helper()
	ra := r.Header.Get("Retry-After")
	if ra == "" {
		t.Errorf("%s: no Retry-After header: %v", what, r.Header)
		return
	}
	if _, err := strconv.Atoi(ra); err != nil {
		if _, err := http.ParseTime(ra); err != nil {
			t.Errorf("%s: Retry-After %q is neither seconds nor an HTTP date", what, ra)
		}
	}
}

// TestClientLongHold: with the default connection limits (--body-timeout
// 60s, --conn-idle-timeout 120s), a request held 5 minutes for an instance
// that takes that long to start is answered, not cut, and a stream that
// lasts more than 2 minutes ends with [DONE].
//
// The requests start before t.Parallel, so their minutes overlap the
// package's sequential tests as well as the parallel ones; the test then
// waits for them.
func TestClientLongHold(t *testing.T) {
	const startup = 5 * time.Minute
	const streamTokens = 135 // at 1 token/s: 2m15s, past the 2m idle limit
	ph := startThaw(t, thawOpts{SimStartup: startup, HoldTimeout: startup + time.Minute})
	ps := startThaw(t, thawOpts{TokensPerSecond: 1})
	hname, sname := uniqueName("longhold"), uniqueName("longstream")
	ph.create(t, devToken, llmRequest(hname, "A100-80GB", 1, 1, 0, 1))
	ps.create(t, devToken, llmRequest(sname, "A100-80GB", 1, 1, 0, 1))
	ctx, cancel := context.WithTimeout(context.Background(), startup+3*time.Minute)
	defer cancel()

	held := timed(func() (response, error) {
		return readAll(ph.postUntimed(ctx, chatPath, "", chatBody("dev/"+hname, 2, false)))
	})
	type streamed struct {
		status int
		chunks int
		last   string
		span   time.Duration
		err    error
	}
	stream := make(chan streamed, 1)
	go func() {
		resp, err := ps.postUntimed(ctx, chatPath, "", chatBody("dev/"+sname, streamTokens, true))
		if err != nil {
			stream <- streamed{err: err}
			return
		}
		defer resp.Body.Close()
		out := streamed{status: resp.StatusCode}
		var first time.Time
		out.err = eachEvent(resp.Body, func(data string) {
			if first.IsZero() {
				first = time.Now()
			}
			out.chunks++
			out.last = data
			out.span = time.Since(first)
		})
		stream <- out
	}()
	t.Parallel()

	s := <-stream
	switch {
	case s.err != nil || s.status != http.StatusOK:
		t.Errorf("a %d-token stream at 1 token/s: HTTP %d, cut after %v and %d events: %v", streamTokens, s.status, s.span, s.chunks, s.err)
	case s.last != "[DONE]" || s.chunks < streamTokens:
		t.Errorf("a %d-token stream at 1 token/s was cut after %v: %d events, the last %q", streamTokens, s.span, s.chunks, s.last)
	case s.span < 2*time.Minute:
		t.Errorf("the stream lasted %v, not past the 2m idle limit: the test proves nothing", s.span)
	default:
		t.Logf("stream of %d events over %v", s.chunks, s.span)
	}

	o := <-held
	switch {
	case o.err != nil:
		t.Errorf("a request held for a %v cold start: cut after %v: %v", startup, o.took, o.err)
	case checkChat(o.r, 2) != "":
		t.Errorf("a request held for a %v cold start, answered after %v: %s", startup, o.took, checkChat(o.r, 2))
	case o.took < startup:
		t.Errorf("the held request was answered after %v, before the %v cold start could end", o.took, startup)
	default:
		t.Logf("held request answered after %v (%s %s)", o.took, coldStartHeader, o.r.Header.Get(coldStartHeader))
	}
}
