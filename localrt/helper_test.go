package localrt

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/thawhq/thaw/fleet"
	"github.com/thawhq/thaw/internal/logtest"
)

// TestHelperProcess is not a test: it is the model server the tests run, by
// re-executing the test binary (see helperCommand). spec.Model picks what it
// does:
//
//	listen       listen on 127.0.0.1:port, print to stdout, exit 0 on SIGTERM
//	ignore-term  listen and ignore SIGTERM
//	fail         print two lines to stderr and exit 1
//	token        like listen if HF_TOKEN equals WANT_TOKEN, else fail
//	leave-child  like listen, after starting a child that ignores SIGTERM
//	             (printing "child <pid>") and writing a file "here" in its
//	             working directory
//	runtime      play thaw: see helperRuntime
func TestHelperProcess(t *testing.T) {
	if os.Getenv("LOCALRT_HELPER") != "1" {
		return
	}
	args := os.Args[slices.Index(os.Args, "--")+1:]
	mode, port := args[0], args[1]
	switch mode {
	case "runtime":
		helperRuntime()
	case "leave-child":
		leaveChild()
	case "fail":
		fmt.Fprintln(os.Stderr, "loading weights")
		fmt.Fprintln(os.Stderr, "boom: out of memory")
		os.Exit(1)
	case "token":
		if os.Getenv("HF_TOKEN") != os.Getenv("WANT_TOKEN") {
			fmt.Fprintln(os.Stderr, "wrong HF_TOKEN")
			os.Exit(2)
		}
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM)
	}
	term := make(chan os.Signal, 1)
	if mode != "ignore-term" {
		signal.Notify(term, syscall.SIGTERM)
	}
	l, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	fmt.Println("listening on", l.Addr())
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	select {
	case <-term:
		os.Exit(0)
	case <-time.After(time.Minute): // never outlive the tests for long
		os.Exit(4)
	}
}

// leaveChild starts a process that ignores SIGTERM, in the helper's process
// group, which the helper will not stop, and marks its working directory.
func leaveChild() {
	c := exec.Command("sh", "-c", "trap '' TERM; exec sleep 60")
	if err := c.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	fmt.Println("child", c.Process.Pid)
	if err := os.WriteFile("here", nil, 0o600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
}

// helperCommand is a Config.Command running TestHelperProcess.
func helperCommand(spec fleet.Spec, port int, _ string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "--", spec.Model, fmt.Sprint(port))
	// GORACE: a -race binary otherwise sleeps 1s before it exits.
	cmd.Env = append(os.Environ(), "LOCALRT_HELPER=1", "WANT_TOKEN=hf_secret_123", "GORACE=atexit_sleep_ms=0")
	return cmd
}

// harness runs a Runtime for one test and records its reports.
type harness struct {
	t    *testing.T
	rt   *Runtime
	logs *logtest.Buffer

	cancel  context.CancelFunc
	runDone chan error

	mu     sync.Mutex
	events []fleet.Instance
}

// start runs a Runtime with cfg (helperCommand and a debug log buffer unless
// set) until the test ends.
func start(t *testing.T, cfg Config) *harness {
	t.Helper()
	return startWith(t, cfg, nil)
}

// startWith is start, calling before (when not nil) before Run.
func startWith(t *testing.T, cfg Config, before func(*Runtime)) *harness {
	t.Helper()
	h := &harness{t: t, logs: &logtest.Buffer{}, runDone: make(chan error, 1)}
	if cfg.Command == nil {
		cfg.Command = helperCommand
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if cfg.StopGrace == 0 {
		cfg.StopGrace = 2 * time.Second
	}
	rt, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.rt = rt
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	if before != nil {
		before(rt)
	}
	go func() { h.runDone <- rt.Run(ctx) }()
	quitRec := make(chan struct{})
	recDone := make(chan struct{})
	go func() {
		defer close(recDone)
		for {
			select {
			case ev := <-rt.Events():
				h.record(ev)
			case <-quitRec:
				// Run has returned and flushed its last reports.
				for {
					select {
					case ev := <-rt.Events():
						h.record(ev)
					default:
						return
					}
				}
			}
		}
	}()
	t.Cleanup(func() {
		h.stop()
		close(quitRec)
		<-recDone
	})
	return h
}

func (h *harness) record(ev fleet.Instance) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, ev)
}

// stop cancels Run and waits for it to return.
func (h *harness) stop() {
	h.t.Helper()
	h.cancel()
	select {
	case err := <-h.runDone:
		if err != nil {
			h.t.Errorf("Run: %v", err)
		}
		h.runDone <- err
	case <-time.After(15 * time.Second):
		h.t.Fatal("Run did not return within 15s of cancel")
	}
}

// startInst calls Start and fails the test on error.
func (h *harness) startInst(spec fleet.Spec) string {
	h.t.Helper()
	id, err := h.rt.Start(context.Background(), spec)
	if err != nil {
		h.t.Fatalf("Start: %v", err)
	}
	return id
}

// eventually polls cond until it holds, failing the test with msg after
// timeout. The tests here run real child processes, which a synctest bubble
// cannot hold, so they wait in real time, but on a condition, not for a
// fixed time.
func eventually(t *testing.T, timeout time.Duration, cond func() bool, msg func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, msg())
		}
		<-tick.C
	}
}

// waitFor waits up to 10s for a report of instance id in phase and returns it.
func (h *harness) waitFor(id string, phase fleet.Phase) fleet.Instance {
	h.t.Helper()
	var found fleet.Instance
	eventually(h.t, 10*time.Second, func() bool {
		for _, ev := range h.of(id) {
			if ev.Phase == phase {
				found = ev
				return true
			}
		}
		return false
	}, func() string { return fmt.Sprintf("no %s report for %s; reports: %+v", phase, id, h.of(id)) })
	return found
}

// of returns the reports so far of instance id.
func (h *harness) of(id string) []fleet.Instance {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []fleet.Instance
	for _, ev := range h.events {
		if ev.ID == id {
			out = append(out, ev)
		}
	}
	return out
}

// pid returns the process ID of a running instance.
func (h *harness) pid(id string) int {
	h.t.Helper()
	h.rt.mu.Lock()
	defer h.rt.mu.Unlock()
	inst := h.rt.insts[id]
	if inst == nil || inst.pid == 0 {
		h.t.Fatalf("instance %s has no process", id)
	}
	return inst.pid
}

// alive reports whether a process with pid exists and is not a zombie.
func alive(pid int) bool {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(st, ')')
	return i < 0 || i+2 >= len(st) || st[i+2] != 'Z'
}

// dial waits up to 10s for addr to accept a TCP connection.
func dial(t *testing.T, addr string) {
	t.Helper()
	eventually(t, 10*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}, func() string { return "nothing listens on " + addr })
}

// syscallKill kills pid, for cleanup after a failed check.
func syscallKill(pid int) { syscall.Kill(pid, syscall.SIGKILL) }
