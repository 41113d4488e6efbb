package localrt

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/thawhq/thaw/fleet"
)

// helperRuntime plays thaw for TestChildDiesWithParent (TestHelperProcess
// in mode "runtime"): it runs a Runtime with one instance (its state in
// $LOCALRT_STATE_DIR, with a 20ms heartbeat), prints the instance's PID and
// ID and waits to be killed.
func helperRuntime() {
	rt, err := New(Config{
		Inventory: map[string]int{"A100-80GB": 1},
		Command:   helperCommand,
		Logger:    slog.New(slog.DiscardHandler),
		StateDir:  os.Getenv("LOCALRT_STATE_DIR"),
		Heartbeat: 20 * time.Millisecond,
	})
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	go rt.Run(context.Background())
	if _, err := rt.Start(context.Background(), fleet.Spec{Model: "listen", GPU: "A100-80GB", NumGPUs: 1}); err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	for ev := range rt.Events() {
		if ev.Phase == fleet.PhaseRunning {
			rt.mu.Lock()
			fmt.Println("child", rt.insts[ev.ID].pid, ev.ID)
			rt.mu.Unlock()
			break
		}
	}
	// Wait to be killed; the bound keeps an orphaned helper from outliving
	// the tests for long (a child process's lifetime, not a wait in a test).
	time.Sleep(time.Minute)
	os.Exit(1)
}

// TestChildDiesWithParent: thaw killed by SIGKILL takes its model servers
// with it, and the next run closes their GPU time at the last heartbeat the
// killed one recorded.
func TestChildDiesWithParent(t *testing.T) {
	dir := t.TempDir()
	cmd := helperCommand(fleet.Spec{Model: "runtime"}, 0, "")
	cmd.Env = append(cmd.Env, "LOCALRT_STATE_DIR="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	var pid int
	var id string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "child "); ok {
			fmt.Sscan(rest, &pid, &id)
			break
		}
	}
	if pid == 0 || !alive(pid) {
		t.Fatalf("helper runtime did not report a live child (pid %d)", pid)
	}
	// A heartbeat after the child started.
	path := filepath.Join(dir, stateFileName)
	var beat state
	eventually(t, 5*time.Second, func() bool {
		var err error
		beat, err = readState(path)
		return err == nil && len(beat.Children) == 1 && beat.AliveAt.After(beat.Children[0].Held)
	}, func() string { return fmt.Sprintf("no heartbeat after the child started: %+v", beat) })

	// SIGKILL: thaw gets no chance to stop its children.
	cmd.Process.Kill()
	killedAt := time.Now()
	cmd.Wait()
	t.Cleanup(func() { syscallKill(pid) }) // if the check below fails
	eventually(t, 5*time.Second, func() bool { return !alive(pid) },
		func() string { return fmt.Sprintf("child %d outlived its SIGKILLed parent", pid) })
	last, err := readState(path)
	if err != nil || len(last.Children) != 1 || last.Children[0].ID != id {
		t.Fatalf("state file the killed run left: %+v, %v; want child %s", last, err, id)
	}

	// The next run closes the child at the last heartbeat: at most one
	// heartbeat before thaw was killed.
	h := start(t, Config{StateDir: dir})
	at, ok, err := h.rt.Ended(context.Background(), id)
	if err != nil || !ok || !at.Equal(last.AliveAt) || at.Before(beat.AliveAt) || at.After(killedAt) {
		t.Errorf("Ended(%s) = %v, %v, %v; want the last heartbeat %v (after %v, before the kill at %v)",
			id, at, ok, err, last.AliveAt, beat.AliveAt, killedAt)
	}
}

// init keeps the main goroutine on the main thread, which the Go runtime
// never retires, so that no other goroutine (the spawner) runs on it and
// TestChildSurvivesThreadChurn can see a child forked from a thread that
// exits.
func init() { runtime.LockOSThread() }

// TestChildSurvivesThreadChurn checks that children are not forked from a
// thread the Go runtime may retire: Pdeathsig would kill them with it.
func TestChildSurvivesThreadChurn(t *testing.T) {
	// Both instances are forked in one batch, from one thread, as soon as
	// Run starts; without a dedicated thread, that thread then goes on to
	// wait for the last child in a system call, and is free again once
	// that child is stopped.
	var a, b string
	h := startWith(t, Config{Inventory: map[string]int{"A100-80GB": 2}}, func(rt *Runtime) {
		for _, id := range []*string{&a, &b} {
			var err error
			*id, err = rt.Start(context.Background(), fleet.Spec{Model: "listen", GPU: "A100-80GB", NumGPUs: 1})
			if err != nil {
				t.Fatal(err)
			}
		}
	})
	dial(t, h.waitFor(a, fleet.PhaseRunning).Addr)
	h.waitFor(b, fleet.PhaseRunning)
	pid := h.pid(a)
	if err := h.rt.Stop(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	// A goroutine that exits locked to its thread takes the thread with it.
	// Many of them at once take every idle thread.
	var wg sync.WaitGroup
	var locked sync.WaitGroup
	release := make(chan struct{})
	tids := make([]int, 200)
	for i := range tids {
		locked.Add(1)
		wg.Go(func() {
			runtime.LockOSThread()
			tids[i] = syscall.Gettid()
			locked.Done()
			<-release
		})
	}
	locked.Wait() // each goroutine holds a thread of its own
	close(release)
	wg.Wait()
	// Wait until the kernel has retired those threads: a child with
	// Pdeathsig set by one of them is signalled as the thread exits.
	eventually(t, 10*time.Second, func() bool {
		for _, tid := range tids {
			if _, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", tid)); err == nil {
				return false
			}
		}
		return true
	}, func() string { return "locked threads still exist after their goroutines returned" })
	// The signal is delivered asynchronously; proving the child was not
	// killed needs a window to watch, so watch it for 100ms.
	window := time.NewTimer(100 * time.Millisecond)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for watching := true; watching; {
		select {
		case <-window.C:
			watching = false
		case <-tick.C:
		}
		if !alive(pid) {
			t.Fatalf("child %d died when unrelated threads exited", pid)
		}
	}
	if got := h.of(a); len(got) != 1 {
		t.Errorf("reports = %+v, want only running", got)
	}
}
