package spend

import (
	"context"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/thawhq/thaw/meter"
)

// fakeLedger is an in-memory ledger: intervals and accounts.
type fakeLedger struct {
	mu       sync.Mutex
	ivs      []meter.Interval
	toks     []meter.Tokens
	events   []meter.Event
	accounts map[string]meter.Account
}

func (l *fakeLedger) Tokens(_ context.Context, owner string, from, to time.Time) ([]meter.Tokens, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []meter.Tokens
	for _, t := range l.toks {
		if (owner == "" || t.Owner == owner) && !t.Hour.Before(from) && t.Hour.Before(to) {
			out = append(out, t)
		}
	}
	return out, nil
}

func (l *fakeLedger) Events(_ context.Context, owner string, since time.Time, _ int) ([]meter.Event, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []meter.Event
	for _, e := range l.events {
		if e.Owner == owner && !e.At.Before(since) {
			out = append(out, e)
		}
	}
	return out, nil
}

// record is an Announce that keeps events the way the control plane does.
func (l *fakeLedger) record(_ context.Context, _ meter.Account, e Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, meter.Event{Owner: e.Owner, At: e.At, Type: e.Type, DeployID: e.DeployID, Message: e.Message})
}

func (l *fakeLedger) Intervals(_ context.Context, owner string, from, to time.Time) ([]meter.Interval, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []meter.Interval
	for _, iv := range l.ivs {
		if (owner == "" || iv.Owner == owner) && iv.Start.Before(to) && (iv.End.IsZero() || iv.End.After(from)) {
			out = append(out, iv)
		}
	}
	return out, nil
}

func (l *fakeLedger) Account(_ context.Context, owner string) (meter.Account, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a, ok := l.accounts[owner]
	if !ok {
		a.Owner = owner
	}
	return a, nil
}

func (l *fakeLedger) PutAccount(_ context.Context, a meter.Account) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.accounts[a.Owner] = a
	return nil
}

func (l *fakeLedger) MarkNotified(_ context.Context, owner string, month time.Time, threshold int) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a := l.accounts[owner]
	if a.NotifiedMonth.Equal(month) && a.Notified >= threshold {
		return false, nil
	}
	a.Owner, a.Notified, a.NotifiedMonth = owner, threshold, month
	l.accounts[owner] = a
	return true, nil
}

// TestEnforcerBlocksWithinSeconds: a user whose one GPU costs 3600 USD an
// hour (1 USD a second) with a 100 USD limit is told at 50, 80 and 100
// USD, each once, and is blocked within the check interval of crossing;
// raising the limit lifts the block at the next pass.
func TestEnforcerBlocksWithinSeconds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		l := &fakeLedger{accounts: map[string]meter.Account{"alice": {Owner: "alice", SpendingLimitUSD: 100}}}
		l.ivs = []meter.Interval{{InstanceID: "i1", DeployID: "d1", Owner: "alice", GPU: "A100-80GB", NumGPUs: 1, Start: start}}
		var mu sync.Mutex
		var told []int
		var changes []bool
		e, err := New(Config{
			Ledger: l, Prices: meter.Prices{"A100-80GB": 3600},
			Announce: func(_ context.Context, _ meter.Account, ev Event) {
				mu.Lock()
				told = append(told, ev.Threshold)
				mu.Unlock()
			},
			Changed: func(_ string, blocked bool) {
				mu.Lock()
				changes = append(changes, blocked)
				mu.Unlock()
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go e.Run(ctx)

		time.Sleep(99 * time.Second)
		synctest.Wait()
		if _, blocked := e.Blocked("alice"); blocked {
			t.Fatal("blocked at 99 USD of 100")
		}
		time.Sleep(3 * time.Second) // 100 USD crossed at 100 s; one check interval later
		synctest.Wait()
		msg, blocked := e.Blocked("alice")
		if !blocked {
			t.Fatal("not blocked 2 s after crossing the limit")
		}
		t.Log(msg)
		mu.Lock()
		if !slices.Equal(told, []int{50, 80, 100}) {
			t.Errorf("announced %v, want [50 80 100], each once", told)
		}
		mu.Unlock()

		a, _ := l.Account(ctx, "alice")
		a.SpendingLimitUSD = 1000
		l.PutAccount(ctx, a)
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if _, blocked := e.Blocked("alice"); blocked {
			t.Error("still blocked after the limit was raised")
		}
		mu.Lock()
		defer mu.Unlock()
		if !slices.Equal(changes, []bool{true, false}) {
			t.Errorf("Changed calls %v, want [true false]", changes)
		}
		if !slices.Equal(told, []int{50, 80, 100}) {
			t.Errorf("announced %v after raising, want nothing new", told)
		}
	})
}

// TestEnforcerMonthTurns: the block lifts when the month turns, and the
// new month's thresholds are announced afresh.
func TestEnforcerMonthTurns(t *testing.T) {
	nov30 := time.Date(2026, 11, 30, 23, 0, 0, 0, time.UTC)
	l := &fakeLedger{accounts: map[string]meter.Account{"bob": {Owner: "bob", SpendingLimitUSD: 10}}}
	// 2 GPUs at 6 USD/h for an hour before midnight, running on.
	l.ivs = []meter.Interval{{InstanceID: "i", DeployID: "d", Owner: "bob", GPU: "L4-24GB", NumGPUs: 2, Start: nov30}}
	var told []Event
	e, err := New(Config{Ledger: l, Prices: meter.Prices{"L4-24GB": 6}, Announce: func(_ context.Context, _ meter.Account, ev Event) { told = append(told, ev) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := e.Check(ctx, nov30.Add(59*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, b := e.Blocked("bob"); !b || len(told) != 3 {
		t.Fatalf("11.8 USD of 10 on Nov 30: blocked %v, announced %d, want blocked and 3", b, len(told))
	}
	dec1 := nov30.Add(61 * time.Minute) // 1 minute into December: 0.2 USD
	if err := e.Check(ctx, dec1); err != nil {
		t.Fatal(err)
	}
	if _, b := e.Blocked("bob"); b {
		t.Error("still blocked after the month turned")
	}
	if err := e.Check(ctx, dec1.Add(24*time.Minute)); err != nil { // 5 USD in December
		t.Fatal(err)
	}
	if n := len(told); n != 4 || told[3].Threshold != 50 || told[3].Month != "2026-12" {
		t.Errorf("December's 50%%: announced %+v", told[3:])
	}
}

// TestEnforcerIdle: a deployment running with no request for IdleAfter is
// announced once per idle stretch, within a minute of reaching it, and
// again only after a request starts a new stretch.
func TestEnforcerIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		l := &fakeLedger{accounts: map[string]meter.Account{}}
		l.ivs = []meter.Interval{{InstanceID: "i", DeployID: "d", Model: "u/m", Owner: "u", GPU: "L4-24GB", NumGPUs: 1, Start: start}}
		e, err := New(Config{Ledger: l, Prices: meter.Prices{"L4-24GB": 1}, IdleAfter: 3 * time.Hour, Announce: l.record})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go e.Run(ctx)
		idleEvents := func() (n int) {
			l.mu.Lock()
			defer l.mu.Unlock()
			for _, ev := range l.events {
				if ev.Type == EventDeploymentIdle && ev.DeployID == "d" {
					n++
				}
			}
			return n
		}
		time.Sleep(3*time.Hour - time.Minute)
		synctest.Wait()
		if n := idleEvents(); n != 0 {
			t.Fatalf("%d idle events before 3 h", n)
		}
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		if n := idleEvents(); n != 1 {
			t.Fatalf("%d idle events a minute after 3 h idle, want 1", n)
		}
		time.Sleep(5 * time.Hour)
		synctest.Wait()
		if n := idleEvents(); n != 1 {
			t.Fatalf("%d idle events in the same stretch, want 1", n)
		}
		// A request in this hour ends the stretch; 3 h later it is idle again.
		l.mu.Lock()
		l.toks = append(l.toks, meter.Tokens{DeployID: "d", Owner: "u", Hour: time.Now().Truncate(time.Hour), Requests: 1})
		l.mu.Unlock()
		time.Sleep(4*time.Hour + 2*time.Minute)
		synctest.Wait()
		if n := idleEvents(); n != 2 {
			t.Fatalf("%d idle events after a new stretch, want 2", n)
		}
	})
}

// TestEnforcersShareAnnouncements: two replicas' enforcers over one ledger
// announce each threshold once between them.
func TestEnforcersShareAnnouncements(t *testing.T) {
	now := time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC)
	l := &fakeLedger{accounts: map[string]meter.Account{"u": {Owner: "u", SpendingLimitUSD: 10}}}
	l.ivs = []meter.Interval{{InstanceID: "i", DeployID: "d", Owner: "u", GPU: "L4-24GB", NumGPUs: 1, Start: now.Add(-time.Hour)}}
	var told []int
	announce := func(_ context.Context, _ meter.Account, ev Event) { told = append(told, ev.Threshold) }
	var es []*Enforcer
	for range 2 {
		e, err := New(Config{Ledger: l, Prices: meter.Prices{"L4-24GB": 6}, Announce: announce})
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, e)
	}
	ctx := context.Background()
	for _, at := range []time.Duration{0, 20 * time.Minute, 40 * time.Minute} { // 6, 8, 10 USD
		for _, e := range es {
			if err := e.Check(ctx, now.Add(at)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !slices.Equal(told, []int{50, 80, 100}) {
		t.Errorf("two replicas announced %v, want [50 80 100] once each", told)
	}
	for i, e := range es {
		if _, b := e.Blocked("u"); !b {
			t.Errorf("replica %d does not block the user at the limit", i)
		}
	}
}
