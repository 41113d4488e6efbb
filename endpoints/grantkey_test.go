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
