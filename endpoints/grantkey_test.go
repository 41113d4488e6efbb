package endpoints

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/thawhq/thaw/internal/redistest"
)

// TestGrantKeyShared: an activator started before the control plane waits
// for its key; grants one control plane issues verify at every activator and
// at a control plane started later.
func TestGrantKeyShared(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mr, rdb := redistest.New(t)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()

		waited := make(chan error, 1)
		var act interface {
			Verify(string, time.Time) (string, string, bool)
		}
		go func() {
			g, err := WaitGrants(ctx, rdb)
			act = g
			waited <- err
		}()
		cp1, err := CreateGrants(ctx, rdb)
		if err != nil {
			t.Fatal(err)
		}
		if err := <-waited; err != nil {
			t.Fatalf("activator: %v", err)
		}
		cp2, err := CreateGrants(ctx, rdb)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		for name, g := range map[string]interface {
			Issue(string, string, time.Time) string
		}{"first control plane": cp1, "second control plane": cp2} {
			grant := g.Issue("alice", "d1", now)
			if u, d, ok := act.Verify(grant, now); !ok || u != "alice" || d != "d1" {
				t.Errorf("a grant of the %s does not verify at the activator", name)
			}
		}

		short, cancelShort := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancelShort()
		mr.FlushAll()
		if _, err := WaitGrants(short, rdb); err == nil {
			t.Error("WaitGrants returned without a key in Redis")
		}
	})
}

// TestFollowGrantKey: Redis loses the key (a restart without persistence).
// The running control plane puts its key back, so the running activator and
// a new one agree with it; a control plane restarted meanwhile, with a new
// key, takes the shared one back within a period.
func TestFollowGrantKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mr, rdb := redistest.New(t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		cp, err := CreateGrants(ctx, rdb)
		if err != nil {
			t.Fatal(err)
		}
		act, err := WaitGrants(ctx, rdb)
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = FollowGrantKey(ctx, rdb, cp) }()
		go func() { _ = FollowGrantKey(ctx, rdb, act) }()
		verifies := func(issuer, verifier interface {
			Issue(string, string, time.Time) string
			Verify(string, time.Time) (string, string, bool)
		}) bool {
			_, _, ok := verifier.Verify(issuer.Issue("alice", "d1", time.Now()), time.Now())
			return ok
		}

		mr.FlushAll()
		time.Sleep(grantKeyEvery + time.Second)
		synctest.Wait()
		late, err := WaitGrants(ctx, rdb)
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = FollowGrantKey(ctx, rdb, late) }()
		if !verifies(cp, act) || !verifies(cp, late) {
			t.Error("after Redis lost the key, grants of the running control plane do not verify at the activators")
		}

		// A control plane restarted after another flush creates a new key
		// before the running one restores its own.
		mr.FlushAll()
		restarted, err := CreateGrants(ctx, rdb)
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = FollowGrantKey(ctx, rdb, restarted) }()
		time.Sleep(grantKeyEvery + time.Second)
		synctest.Wait()
		if !verifies(restarted, act) || !verifies(cp, act) || !verifies(restarted, late) {
			t.Error("a key created after a flush is not followed by every holder within a period")
		}
	})
}
