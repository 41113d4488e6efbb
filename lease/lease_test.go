package lease

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/internal/bubbletest"
)

func TestNewRefusesBadConfig(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no locker": {ID: "a"},
		"no id":     {Locker: Solo("a")},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted %+v", name, cfg)
		}
	}
}

// TestWinAndHandover: of two replicas exactly one leads and the other
// names it; a graceful stop ends the leader's term before it releases the
// lock, and the other leads within its Retry period.
func TestWinAndHandover(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n, ts := newNomadLock(), &terms{t: t}
		n.onRelease = func(id string) {
			if leading, _ := ts.now(); leading == id {
				t.Errorf("%s released the lock while its term ran", id)
			}
		}
		start0 := time.Now()
		a := start(t, n.locker("a"), "a", ts.lead("a", nil))
		bubbletest.Eventually(t, "a to lead", a.leads)
		b := start(t, n.locker("b"), "b", ts.lead("b", nil))
		sleep(time.Minute) // 24 renewals; b campaigns 60 times
		if diff := cmp.Diff(Status{Leader: true, Holder: "a", Since: start0}, a.l.Status()); diff != "" {
			t.Errorf("a's status (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(Status{Holder: "a", Since: start0}, b.l.Status()); diff != "" {
			t.Errorf("b's status (-want +got):\n%s", diff)
		}

		stopped := time.Now()
		a.cancel()
		if err := a.wait(); err != nil {
			t.Fatalf("a's Run after a graceful stop: %v", err)
		}
		if got := time.Since(stopped); got != 0 {
			t.Errorf("a's graceful stop took %v, want no wait", got)
		}
		if _, log := ts.now(); log != "a+ a-" {
			t.Errorf("terms %q when a's Run returned, want a's ended", log)
		}
		bubbletest.Eventually(t, "b to lead", b.leads)
		if got := time.Since(stopped); got > time.Second {
			t.Errorf("b led %v after a's graceful stop, want within Retry (1s)", got)
		}
		if st := a.l.Status(); st.Leader || !st.Since.Equal(stopped) {
			t.Errorf("a's status after its stop: %+v", st)
		}
		for _, want := range []string{"lease: acquired", "lease: released"} {
			if !strings.Contains(a.logs.String(), want) {
				t.Errorf("a's log lacks %q:\n%s", want, a.logs)
			}
		}
	})
}

// TestLoseOnErrHeld: a leader that Nomad says lost the lock stops leading
// at its next renewal, follows the new holder and campaigns again.
func TestLoseOnErrHeld(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n, ts := newNomadLock(), &terms{t: t}
		a := start(t, n.locker("a"), "a", ts.lead("a", nil))
		bubbletest.Eventually(t, "a to lead", a.leads)
		n.set(func(n *nomadLock) { n.holder, n.last = "x", "x" }) // taken while a was paused
		sleep(ttl/4 + time.Second)
		if leading, log := ts.now(); leading != "" || log != "a+ a-" {
			t.Fatalf("a leads (%q, terms %q) a renewal after losing the lock", leading, log)
		}
		if diff := cmp.Diff(Status{Holder: "x", Since: time.Now().Add(-time.Second)}, a.l.Status()); diff != "" {
			t.Errorf("a's status (-want +got):\n%s", diff)
		}
		if log := a.logs.String(); !strings.Contains(log, "lease: lost") || !strings.Contains(log, "renewal refused") {
			t.Errorf("a's log does not say it lost the lock on a refused renewal:\n%s", log)
		}
		n.set(func(n *nomadLock) { n.holder = "" }) // x stops gracefully
		bubbletest.Eventually(t, "a to lead again", a.leads)
		if _, log := ts.now(); log != "a+ a- a+" {
			t.Errorf("terms %q, want a's second one running", log)
		}
		if done, err := a.returned(); done {
			t.Fatalf("Run returned %v after losing the lock", err)
		}
	})
}

// TestLoseOnSilence: a leader cut off from Nomad stops leading TTL after
// its last successful renewal was sent, well before Nomad frees the lock
// (2*TTL after it saw that renewal); the other replica leads only then.
// It logs one warning for the failing renewals, not one per retry. It
// counts TTL from when a renewal was sent, not answered ("slow").
func TestLoseOnSilence(t *testing.T) {
	for _, how := range []string{"refused", "hung", "slow"} {
		t.Run(how, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { loseOnSilence(t, how) })
		})
	}
}

func loseOnSilence(t *testing.T, how string) {
	n, ts := newNomadLock(), &terms{t: t}
	a := start(t, n.locker("a"), "a", ts.lead("a", nil))
	bubbletest.Eventually(t, "a to lead", a.leads)
	if how == "slow" {
		n.set(func(n *nomadLock) { n.slow["a"] = 2 * time.Second })
	}
	b := start(t, n.locker("b"), "b", ts.lead("b", nil))
	sleep(ttl)
	var lastRenewal time.Time
	n.set(func(n *nomadLock) {
		if how == "hung" {
			n.hang["a"] = true
		} else {
			n.cut["a"] = true
		}
		lastRenewal = n.renewed
	})
	var aStopped, bLed time.Time
	for i := 0; i < 400 && bLed.IsZero(); i++ {
		sleep(100 * time.Millisecond)
		if aStopped.IsZero() && !a.leads() {
			aStopped = time.Now()
		}
		if b.leads() {
			bLed = time.Now()
		}
	}
	if got := aStopped.Sub(lastRenewal); got <= 0 || got > ttl {
		t.Errorf("a stopped leading %v after its last renewal, want within TTL (%v)", got, ttl)
	}
	if got := bLed.Sub(lastRenewal); got < 2*ttl || got > 2*ttl+2*time.Second {
		t.Errorf("b led %v after a's last renewal, want 2*TTL to 2*TTL+2s", got)
	}
	if _, log := ts.now(); log != "a+ a- b+" {
		t.Errorf("terms %q, want a's then b's", log)
	}
	log := a.logs.String()
	if !strings.Contains(log, "lease: lost") || !strings.Contains(log, errSilent.Error()) {
		t.Errorf("a's log does not say it lost the lock for want of renewals:\n%s", log)
	}
	if how == "refused" && strings.Count(log, "renewal failed") != 1 {
		t.Errorf("a's log warns %d times about failed renewals, want once:\n%s", strings.Count(log, "renewal failed"), log)
	}
}

// TestLeadError: a term whose work fails releases the lock, and Run
// returns the failure (the process then exits); the other replica leads.
func TestLeadError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newNomadLock()
		boom := errors.New("boom")
		a := start(t, n.locker("a"), "a", func(ctx context.Context) error { return boom })
		if err := a.wait(); !errors.Is(err, boom) {
			t.Fatalf("Run returned %v, want the lead's error", err)
		}
		if err := n.locker("b").Acquire(context.Background()); err != nil {
			t.Errorf("b's Acquire after a's work failed: %v, want the lock released", err)
		}
		if log := a.logs.String(); !strings.Contains(log, "lease: released") || !strings.Contains(log, "boom") {
			t.Errorf("a's log does not say it released the lock because its work failed:\n%s", log)
		}
		if a.leads() {
			t.Error("a's status says it leads after Run returned")
		}
	})
}

// TestLeadReturns: a term whose work returns nil releases the lock and
// campaigns again.
func TestLeadReturns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newNomadLock()
		terms := make(chan struct{}, 10)
		a := start(t, n.locker("a"), "a", func(ctx context.Context) error {
			terms <- struct{}{}
			return nil
		})
		sleep(2500 * time.Millisecond)
		if got := len(terms); got != 3 {
			t.Errorf("%d terms in 2.5s, want 3 (one per Retry)", got)
		}
		if done, err := a.returned(); done {
			t.Fatalf("Run returned %v", err)
		}
	})
}

// TestNomadDown: while Nomad is unreachable a follower keeps campaigning,
// logging it once; it leads when Nomad is back, and says Nomad is back.
func TestNomadDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n, ts := newNomadLock(), &terms{t: t}
		n.set(func(n *nomadLock) { n.down = true })
		a := start(t, n.locker("a"), "a", ts.lead("a", nil))
		sleep(10 * time.Minute)
		if a.leads() {
			t.Fatal("a leads while Nomad is unreachable")
		}
		if done, err := a.returned(); done {
			t.Fatalf("Run returned %v while Nomad was unreachable", err)
		}
		if got := strings.Count(a.logs.String(), "connection refused"); got != 1 {
			t.Errorf("%d warnings in 10 minutes of Nomad unreachable, want 1:\n%s", got, a.logs)
		}
		n.set(func(n *nomadLock) { n.down = false })
		bubbletest.Eventually(t, "a to lead", a.leads)
		if log := a.logs.String(); !strings.Contains(log, "ok again") {
			t.Errorf("a's log does not say Nomad answers again:\n%s", log)
		}
	})
}

// TestRenewEvery: the leader renews every TTL/4.
func TestRenewEvery(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n, ts := newNomadLock(), &terms{t: t}
		a := start(t, n.locker("a"), "a", ts.lead("a", nil))
		bubbletest.Eventually(t, "a to lead", a.leads)
		sleep(ttl - time.Millisecond)
		n.mu.Lock()
		got := n.renews
		n.mu.Unlock()
		if got != 3 {
			t.Errorf("%d renewals in a TTL, want 3 (every TTL/4)", got)
		}
	})
}

// TestSolo: thaw dev's lock always lets its one process lead.
func TestSolo(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ts := &terms{t: t}
		a := start(t, Solo("dev"), "dev", ts.lead("dev", nil))
		bubbletest.Eventually(t, "dev to lead", a.leads)
		sleep(time.Hour)
		if st := a.l.Status(); !st.Leader || st.Holder != "dev" {
			t.Errorf("status %+v after an hour, want leading", st)
		}
		a.cancel()
		_ = a.wait()
		if h, _ := Solo("dev").Holder(context.Background()); h != "" {
			t.Errorf("a fresh Solo is held by %q", h)
		}
	})
}

// TestHungCampaign: a request Nomad never answers does not stall a
// follower's campaign: once Nomad answers again, it leads.
func TestHungCampaign(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n, ts := newNomadLock(), &terms{t: t}
		n.set(func(n *nomadLock) { n.hang["a"] = true })
		a := start(t, n.locker("a"), "a", ts.lead("a", nil))
		sleep(time.Minute)
		n.set(func(n *nomadLock) { n.hang["a"] = false })
		sleep(ttl/4 + time.Second)
		if !a.leads() {
			t.Errorf("a does not lead %v after Nomad answers again", ttl/4+time.Second)
		}
	})
}

// TestWarnerOncePerCause: the same failure worded two ways by Go's HTTP
// client is one warning; another failure is a second; success, one line.
func TestWarnerOncePerCause(t *testing.T) {
	var buf bytes.Buffer
	w := warner{log: slog.New(slog.NewTextHandler(&buf, nil)), what: "lease: campaign failed"}
	for _, e := range []string{
		`Put "https://127.0.0.1:4646/v1/var/thaw/leader?lock-acquire": remote error: tls: certificate required`,
		`Put "https://127.0.0.1:4646/v1/var/thaw/leader?lock-acquire": readLoopPeekFailLocked: remote error: tls: certificate required`,
		`Put "https://127.0.0.1:4646/v1/var/thaw/leader?lock-acquire": remote error: tls: certificate required`,
		`Put "http://127.0.0.1:4646/v1/var/thaw/leader?lock-acquire": dial tcp 127.0.0.1:4646: connect: connection refused`,
	} {
		w.note(errors.New(e))
	}
	w.note(nil)
	if n := strings.Count(buf.String(), "level=WARN"); n != 2 {
		t.Errorf("%d warnings, want 2 (one per cause):\n%s", n, buf.String())
	}
	if n := strings.Count(buf.String(), "ok again"); n != 1 {
		t.Errorf("%d recoveries logged, want 1:\n%s", n, buf.String())
	}
}
