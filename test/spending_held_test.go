package test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"
)

// TestSpendingHeld: a request the activator holds for a cold deployment
// when its owner goes over their spending limit gets 429
// insufficient_quota at once, not 503 at the hold timeout, and is no longer
// counted as held; once the limit is raised, a new request is held again.
func TestSpendingHeld(t *testing.T) {
	t.Parallel()
	// The instance never becomes ready: the request stays held while the
	// GPUs it took (1 USD a second) run the bill up to the limit.
	p := startThaw(t, thawOpts{SimStartup: time.Hour, HoldTimeout: 10 * time.Minute,
		Args: []string{perSecond, "--spending-check-interval=500ms", "--start-timeout=10m"}})
	if r := p.do(t, http.MethodPut, "/account", devToken, map[string]any{"spending_limit_usd": 3}); r.Status != http.StatusOK {
		t.Fatalf("PUT /account: %s", r)
	}
	d := p.create(t, devToken, llmRequest("heldcap", "A100-80GB", 1, 4, 0, 1))
	chat := map[string]any{"model": "dev/heldcap", "messages": []map[string]string{{"role": "user", "content": "hi"}}}

	type answer struct {
		r   response
		err error
		at  time.Time
	}
	held := make(chan answer, 1)
	go func() {
		r, err := p.doCtx(t.Context(), http.MethodPost, "/v1/openai/chat/completions", devToken, chat)
		held <- answer{r, err, time.Now()}
	}()
	if !p.waitSlots(t, d.ID, "request held for the cold deployment", 10*time.Second, func(_, held float64) bool { return held == 1 }) {
		t.FailNow()
	}

	var blockedAt time.Time
	if !waitFor(30*time.Second, 20*time.Millisecond, func() bool {
		var acct struct{ Blocked bool }
		p.do(t, http.MethodGet, "/account", devToken, nil).decode(t, &acct)
		blockedAt = time.Now()
		return acct.Blocked
	}) {
		t.Fatal("not blocked 30s after the instance started")
	}
	var a answer
	select {
	case a = <-held:
	case <-time.After(5 * time.Second):
		t.Fatal("the held request was not answered within 5s of the block")
	}
	if a.err != nil {
		t.Fatalf("held request: %v", a.err)
	}
	if late := a.at.Sub(blockedAt); late > 2*time.Second {
		t.Errorf("held request answered %v after the block was seen, want within 2s", late.Round(time.Millisecond))
	}
	var e struct {
		Error struct{ Type, Code, Message string } `json:"error"`
	}
	a.r.decode(t, &e)
	if a.r.Status != http.StatusTooManyRequests || e.Error.Type != "insufficient_quota" || e.Error.Code != "insufficient_quota" || e.Error.Message == "" {
		t.Errorf("held request: %s, want 429 insufficient_quota with a message", a.r)
	}
	p.waitSlots(t, d.ID, "refused request no longer held", 2*time.Second, func(_, held float64) bool { return held == 0 })

	// Under the limit again: requests are held (for an instance) again,
	// not refused.
	if r := p.do(t, http.MethodPut, "/account", devToken, map[string]any{"spending_limit_usd": 1000}); r.Status != http.StatusOK {
		t.Fatalf("raise the limit: %s", r)
	}
	if !waitFor(15*time.Second, 100*time.Millisecond, func() bool { return heldAgain(t, p, d.ID, chat) }) {
		t.Error("after raising the limit, a new request was not held")
	}
}

// heldAgain sends chat and reports whether it was held (then gives up on
// it) rather than answered at once.
func heldAgain(t *testing.T, p *thawProc, deployID string, chat any) bool {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	answered := make(chan response, 1)
	go func() {
		r, _ := p.doCtx(ctx, http.MethodPost, "/v1/openai/chat/completions", devToken, chat)
		answered <- r
	}()
	deadline := time.After(2 * time.Second)
	for {
		select {
		case r := <-answered:
			var e struct{ Error struct{ Code string } }
			_ = json.Unmarshal(r.Body, &e)
			t.Logf("answered while waiting to be held: %d %s", r.Status, e.Error.Code)
			return false
		case <-deadline:
			return false
		case <-time.After(25 * time.Millisecond):
			if _, held, ok := p.slotGauges(t, deployID); ok && held == 1 {
				cancel()
				<-answered
				return true
			}
		}
	}
}
