package localrt

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/thawhq/thaw/fleet"
)

// TestHeldAndReleased: the reports say when the process started and
// exited, the same start on every report; Ended then answers the exit.
func TestHeldAndReleased(t *testing.T) {
	h := start(t, Config{Inventory: map[string]int{"A100-80GB": 1}, StateDir: t.TempDir()})
	before := time.Now()
	id := h.startInst(fleet.Spec{DeployID: "d1", Model: "listen", GPU: "A100-80GB", NumGPUs: 1})
	running := h.waitFor(id, fleet.PhaseRunning)
	if running.Held.Before(before) || running.Held.After(time.Now()) || !running.Released.IsZero() {
		t.Errorf("running report: Held %v, Released %v; want Held after Start (%v) and no Released", running.Held, running.Released, before)
	}
	at, ok, err := h.rt.Ended(context.Background(), id)
	if err != nil || ok {
		t.Errorf("Ended(running) = %v, %v, %v; want not ended", at, ok, err)
	}
	dial(t, running.Addr)

	stopAt := time.Now()
	if err := h.rt.Stop(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	stoppedAt := time.Now()
	stopped := h.waitFor(id, fleet.PhaseStopped)
	if !stopped.Held.Equal(running.Held) {
		t.Errorf("stopped report: Held %v, want the running report's %v", stopped.Held, running.Held)
	}
	if stopped.Released.Before(stopAt) || stopped.Released.After(stoppedAt) {
		t.Errorf("stopped report: Released %v, want between Stop's call (%v) and return (%v)", stopped.Released, stopAt, stoppedAt)
	}
	at, ok, err = h.rt.Ended(context.Background(), id)
	if err != nil || !ok || !at.Equal(stopped.Released) {
		t.Errorf("Ended(stopped) = %v, %v, %v; want %v", at, ok, err, stopped.Released)
	}
}

func TestEndedOfInstancesThatHeldNoGPU(t *testing.T) {
	h, failed, ev := startFailing(t)
	if !ev.Held.IsZero() || !ev.Released.IsZero() {
		t.Errorf("a model server that could not start: Held %v, Released %v; want neither", ev.Held, ev.Released)
	}
	pending := h.startInst(fleet.Spec{Model: "m", GPU: "H100-80GB", NumGPUs: 1})
	h.waitFor(pending, fleet.PhasePending)
	if _, ok, err := h.rt.Ended(context.Background(), pending); ok || err != nil {
		t.Errorf("Ended(pending) = %v, %v; want not ended", ok, err)
	}
	for _, id := range []string{failed, "never-started"} {
		if _, _, err := h.rt.Ended(context.Background(), id); !errors.Is(err, fleet.ErrUnknownInstance) {
			t.Errorf("Ended(%s) = %v, want ErrUnknownInstance", id, err)
		}
	}
}

// TestEndedAfterRestart: a thaw that was killed left a state file naming a
// child that died with it; the next run closes it at the last heartbeat,
// and keeps answering for it, and for what ended before, across runs.
func TestEndedAfterRestart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, stateFileName)
	// A process that has exited: its PID no longer matches the record.
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	now := time.Now().Round(0)
	heartbeat := now.Add(-time.Hour)
	left := state{
		AliveAt: heartbeat,
		Children: []record{
			{ID: "d1-dead-1", DeployID: "d1", PID: gone.Process.Pid, Argv: gone.Args, Held: heartbeat.Add(-2 * time.Hour)},
			// Its end was recorded; the run died before it rewrote the
			// state file.
			{ID: "d1-dead-0", DeployID: "d1", PID: gone.Process.Pid, Argv: gone.Args, Held: now.Add(-5 * time.Hour)},
		},
	}
	if err := writeState(path, left); err != nil {
		t.Fatal(err)
	}
	if err := writeEnded(filepath.Join(dir, endedFileName), []ended{
		{ID: "d1-dead-0", Held: now.Add(-5 * time.Hour), Released: now.Add(-4 * time.Hour), How: endExit},
		{ID: "d1-old-0", Held: now.Add(-9 * 24 * time.Hour), Released: now.Add(-8 * 24 * time.Hour), How: endExit},
	}); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		id string
		at time.Time
	}{
		{"d1-dead-1", heartbeat},
		{"d1-dead-0", now.Add(-4 * time.Hour)},
	}
	for run := range 2 {
		// Ended is asked before Run has read the file: it waits for it.
		rt, err := New(Config{StateDir: dir, Command: helperCommand})
		if err != nil {
			t.Fatal(err)
		}
		type answer struct {
			at  time.Time
			ok  bool
			err error
		}
		early := make(chan answer, 1)
		go func() {
			at, ok, err := rt.Ended(context.Background(), "d1-dead-1")
			early <- answer{at, ok, err}
		}()
		ctx, cancel := context.WithCancel(context.Background())
		runDone := make(chan error, 1)
		go func() { runDone <- rt.Run(ctx) }()
		if a := <-early; a.err != nil || !a.ok || !a.at.Equal(heartbeat) {
			t.Errorf("run %d: Ended asked before Run = %v, %v, %v; want the last heartbeat %v", run, a.at, a.ok, a.err, heartbeat)
		}
		for _, w := range want {
			at, ok, err := rt.Ended(context.Background(), w.id)
			if err != nil || !ok || !at.Equal(w.at) {
				t.Errorf("run %d: Ended(%s) = %v, %v, %v; want %v", run, w.id, at, ok, err, w.at)
			}
		}
		// Past the retention: forgotten.
		if _, _, err := rt.Ended(context.Background(), "d1-old-0"); !errors.Is(err, fleet.ErrUnknownInstance) {
			t.Errorf("run %d: Ended(a week old) = %v, want ErrUnknownInstance", run, err)
		}
		cancel()
		if err := <-runDone; err != nil {
			t.Fatal(err)
		}
	}
	st, err := readState(path)
	if err != nil || len(st.Children) != 0 {
		t.Errorf("state file after two runs: %+v, %v; want no child", st, err)
	}
	es, err := readEnded(filepath.Join(dir, endedFileName))
	if err != nil || len(es) != 2 || es[0].ID != "d1-dead-0" || es[0].How != endExit || es[1].How != endHeartbeat {
		t.Errorf("ended file after two runs: %+v, %v; want the two ends, closed by exit and heartbeat", es, err)
	}
}

// TestEndedWaitsForRun: Ended does not answer from an empty record before
// Run has read the state file.
func TestEndedWaitsForRun(t *testing.T) {
	rt, err := New(Config{StateDir: t.TempDir(), Command: helperCommand})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := rt.Ended(ctx, "x"); !errors.Is(err, context.Canceled) {
		t.Errorf("Ended before Run, context cancelled: %v, want context.Canceled", err)
	}
}

// TestHeartbeat: while a child runs, the state file says it was alive
// within a heartbeat.
func TestHeartbeat(t *testing.T) {
	dir := t.TempDir()
	h := start(t, Config{Inventory: map[string]int{"A100-80GB": 1}, StateDir: dir, Heartbeat: 20 * time.Millisecond})
	id := h.startInst(fleet.Spec{Model: "listen", GPU: "A100-80GB", NumGPUs: 1})
	held := h.waitFor(id, fleet.PhaseRunning).Held
	path := filepath.Join(dir, stateFileName)
	first, err := readState(path)
	if err != nil || len(first.Children) != 1 || !first.Children[0].Held.Equal(held) {
		t.Fatalf("state file: %+v, %v; want the child with its start %v", first, err, held)
	}
	eventually(t, 5*time.Second, func() bool {
		st, err := readState(path)
		return err == nil && st.AliveAt.After(first.AliveAt) && !st.AliveAt.After(time.Now())
	}, func() string { return "the heartbeat did not advance past " + first.AliveAt.String() })
}
