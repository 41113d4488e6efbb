package proxy

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/httperr"
)

const overLimit = "monthly spending limit of $5.00 reached ($5.01 spent)"

var wantQuota = apiErr{Status: http.StatusTooManyRequests, Type: "insufficient_quota", Code: "insufficient_quota"}

// checkQuota fails unless r is the 429 insufficient_quota of overLimit.
func checkQuota(t *testing.T, what string, r result) {
	t.Helper()
	got, msg := errOf(t, r)
	if diff := cmp.Diff(wantQuota, got); diff != "" {
		t.Errorf("%s (-want +got):\n%s", what, diff)
	}
	if msg != overLimit {
		t.Errorf("%s: message %q, want %q", what, msg, overLimit)
	}
}

// TestRefuseHeld: requests held for a cold deployment whose owner goes over
// their spending limit get 429 insufficient_quota at once, not at the hold
// timeout; their places are given back and the demand drops. After
// Unrefuse requests are held and served again.
func TestRefuseHeld(t *testing.T) {
	h := newHarness(t, Config{})
	held := h.holdChats(3)
	if got := h.sink.get("d1"); got != (Load{Held: 3}) {
		t.Fatalf("demand before Refuse = %v, want 3 held", got)
	}

	start := time.Now()
	h.p.Refuse("d1", httperr.InsufficientQuota("", overLimit))
	for i, ch := range held {
		checkQuota(t, "held request", wait(t, ch, 2*time.Second))
		if d := time.Since(start); d > time.Second {
			t.Errorf("held request %d answered %s after Refuse, want at once", i, d)
		}
	}
	if c := h.p.Counts()["d1"]; c != (Load{}) {
		t.Errorf("counts after Refuse = %+v, want none held", c)
	}
	if got := h.sink.get("d1"); got != (Load{}) {
		t.Errorf("demand reported after Refuse = %+v, want 0", got)
	}

	// A request that reaches the pool while refused (the resolver normally
	// stops it first) is refused too, and wakes nothing.
	wakes := h.sink.woken("d1")
	checkQuota(t, "new request while refused", h.post(context.Background(), "alice", "/v1/openai/chat/completions", chatBody))
	if n := h.sink.woken("d1"); n != wakes {
		t.Errorf("a refused request woke the deployment (%d wakes, want %d)", n, wakes)
	}
	// Another deployment is not affected.
	other := h.postAsync(context.Background(), "bob", "/v1/openai/chat/completions", `{"model":"bob/m","messages":[]}`)
	h.waitHeld("d2", 1)

	h.p.Unrefuse("d1")
	ch := h.postAsync(context.Background(), "alice", "/v1/openai/chat/completions", chatBody)
	h.waitHeld("d1", 1)
	up := newUpstream(t, nil)
	h.p.SetEndpoints("d1", 1, map[string]string{"i1": up.addr()})
	if r := wait(t, ch, 3*time.Second); r.status != http.StatusOK {
		t.Errorf("after Unrefuse: %d %s", r.status, r.body)
	}
	h.p.SetEndpoints("d2", 1, map[string]string{"i2": up.addr()})
	if r := wait(t, other, 3*time.Second); r.status != http.StatusOK {
		t.Errorf("other deployment: %d %s", r.status, r.body)
	}
}

// TestRefuseAndFail: a refusal and a failure are set and cleared each on
// its own; while both hold, the refusal is what the user sees.
func TestRefuseAndFail(t *testing.T) {
	h := newHarness(t, Config{})
	post := func() result { return h.post(context.Background(), "alice", "/v1/openai/chat/completions", chatBody) }
	wantFailed := apiErr{Status: http.StatusServiceUnavailable, Type: "service_unavailable_error", Code: "deployment_failed", RetryAfter: "30"}
	checkFailed := func(what string, r result) {
		t.Helper()
		got, _ := errOf(t, r)
		if diff := cmp.Diff(wantFailed, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", what, diff)
		}
	}
	quota := httperr.InsufficientQuota("", overLimit)

	h.p.Fail("d1", "weights not found: org/x")
	h.p.Refuse("d1", quota)
	checkQuota(t, "failed and refused", post())
	h.p.Unrefuse("d1")
	checkFailed("unrefused, still failed", post())
	h.p.Refuse("d1", quota)
	h.p.Recover("d1")
	checkQuota(t, "recovered, still refused", post())
	// An instance becoming ready clears a failure, not a refusal.
	up := newUpstream(t, nil)
	h.p.SetEndpoints("d1", 1, map[string]string{"i1": up.addr()})
	checkQuota(t, "ready, still refused", post())
	h.p.Unrefuse("d1")
	if r := post(); r.status != http.StatusOK {
		t.Errorf("unrefused and recovered: %d %s", r.status, r.body)
	}

	// Held requests turned away by a failure get the failure, even when
	// the deployment recovers before they are answered.
	h.p.SetEndpoints("d1", 1, nil)
	ch := h.postAsync(context.Background(), "alice", "/v1/openai/chat/completions", chatBody)
	h.waitHeld("d1", 1)
	h.p.Fail("d1", "crash loop")
	h.p.Recover("d1")
	checkFailed("held, failed", wait(t, ch, 2*time.Second))
}

// TestUnrefuseUnknown: Unrefuse of a deployment this activator never saw
// does not make it known.
func TestUnrefuseUnknown(t *testing.T) {
	h := newHarness(t, Config{})
	h.p.Unrefuse("d9")
	if _, ok := h.p.Counts()["d9"]; ok {
		t.Error("Unrefuse of an unknown deployment made it known")
	}
}
