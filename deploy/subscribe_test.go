package deploy

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// pending reports whether a signal is pending on ch, consuming it.
func pending(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestSubscribe(t *testing.T) {
	s, _ := openStore(t)
	before := mustCreate(t, s, newDep("alice", "early", t0))
	changed(s) // the Create above signalled Changed; start clean
	a, b := s.Subscribe(), s.Subscribe()
	if pending(a) || pending(b) {
		t.Fatal("a new subscriber got a signal for a change made before it subscribed")
	}

	type seen struct{ Changed, A, B bool }
	step := func(what string, change func() error, want seen) {
		t.Helper()
		if err := change(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		got := seen{changed(s), pending(a), pending(b)}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: signals (-want +got):\n%s", what, diff)
		}
	}
	all := seen{true, true, true}
	var d Deployment
	step("create", func() (err error) { d, err = s.Create(newDep("alice", "m", t0), nil); return err }, all)
	step("update", func() error {
		_, err := s.Update(d.ID, func(d *Deployment) { d.Settings.MaxInstances = 3 }, nil)
		return err
	}, all)
	step("delete", func() error { return s.Delete(before.ID) }, all)
	step("a failed delete", func() error {
		if err := s.Delete("d-unknown"); err == nil {
			t.Error("Delete of an unknown ID succeeded")
		}
		return nil
	}, seen{})

	// Signals coalesce per subscriber: one reader that has not read yet
	// holds one pending signal and does not hold the others back.
	mustCreate(t, s, newDep("bob", "x", t0))
	mustCreate(t, s, newDep("bob", "y", t0))
	if !pending(a) || pending(a) {
		t.Errorf("subscriber a: want exactly one pending signal after two changes")
	}
	mustCreate(t, s, newDep("bob", "z", t0))
	got := seen{changed(s), pending(a), pending(b)}
	if diff := cmp.Diff(all, got); diff != "" {
		t.Errorf("after b left two signals unread: (-want +got):\n%s", diff)
	}
}
