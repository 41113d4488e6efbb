package e2e

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ProcConfig says how to start one child process. Zero values pick the
// defaults noted on each field.
type ProcConfig struct {
	// Name labels the process in errors and logs; default the base name of
	// Args[0].
	Name string
	// Args is the command line; Args[0] is the binary.
	Args []string
	// Env is added to CleanEnv (the caller's environment without THAW_*
	// and OTEL_* variables).
	Env []string
	// Dir is the working directory; "" is the caller's.
	Dir string
	// Setpgid puts the process in a process group of its own, which Kill
	// and a timed-out Stop signal as a whole.
	Setpgid bool
	// Output, if not nil, also receives everything the process writes to
	// stdout and stderr (e.g. a log file, or a line reader).
	Output io.Writer
	// Keep bounds the output kept in Out to its last Keep bytes; 0 keeps
	// all of it.
	Keep int
	// StopSignal is what Stop sends first; default SIGTERM.
	StopSignal syscall.Signal
	// StopTimeout is how long Stop waits after StopSignal before it
	// SIGKILLs; default 10s.
	StopTimeout time.Duration
}

// Proc is one running child process. It dies with the caller
// (Pdeathsig SIGKILL).
type Proc struct {
	Name string
	Cmd  *exec.Cmd
	// Out is everything the process wrote to stdout and stderr.
	Out *Buffer

	cfg     ProcConfig
	done    chan struct{} // closed when the process has exited
	waitErr error         // set before done is closed
}

// Start starts the process cfg describes.
func Start(cfg ProcConfig) (*Proc, error) {
	if len(cfg.Args) == 0 {
		return nil, fmt.Errorf("e2e.Start: no command")
	}
	if cfg.Name == "" {
		cfg.Name = cfg.Args[0][strings.LastIndexByte(cfg.Args[0], '/')+1:]
	}
	if cfg.StopSignal == 0 {
		cfg.StopSignal = syscall.SIGTERM
	}
	if cfg.StopTimeout == 0 {
		cfg.StopTimeout = 10 * time.Second
	}
	p := &Proc{Name: cfg.Name, Out: &Buffer{Limit: cfg.Keep}, cfg: cfg, done: make(chan struct{})}
	var out io.Writer = p.Out
	if cfg.Output != nil {
		out = io.MultiWriter(p.Out, cfg.Output)
	}
	p.Cmd = exec.Command(cfg.Args[0], cfg.Args[1:]...)
	p.Cmd.Env = append(CleanEnv(), cfg.Env...)
	p.Cmd.Dir = cfg.Dir
	p.Cmd.Stdout, p.Cmd.Stderr = out, out
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: cfg.Setpgid, Pdeathsig: syscall.SIGKILL}
	if err := p.Cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cfg.Name, err)
	}
	go func() {
		p.waitErr = p.Cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// StartT is Start for a test: it fails t on error and registers a cleanup
// that stops the process and, if t failed, logs the tail of its output.
func StartT(t testing.TB, cfg ProcConfig) *Proc {
	t.Helper()
	return startT(t, func() (*Proc, error) { return Start(cfg) })
}

// startT is a Start function for a test: it fails t when start fails and
// registers the started process's Cleanup.
func startT[P interface{ Cleanup(testing.TB) }](t testing.TB, start func() (P, error)) P {
	t.Helper()
	p, err := start()
	if err != nil {
		t.Fatal(err)
	}
	p.Cleanup(t)
	return p
}

// Cleanup registers p.Stop with t, and a log of p's output tail when t has
// failed.
func (p *Proc) Cleanup(t testing.TB) { p.CleanupWith(t, p.Stop) }

// CleanupWith is Cleanup for a process whose owner stops it with more than
// Proc.Stop (a process group to kill, a directory to remove).
func (p *Proc) CleanupWith(t testing.TB, stop func() bool) {
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("%s output (tail):\n%s", p.Name, p.Out.Tail(16<<10))
		}
	})
}

// WaitReady polls ready every interval until it returns nil, the process
// exits, or timeout passes. Its errors say which, with ready's last error
// and the tail of p's output; the caller stops the process.
func (p *Proc) WaitReady(timeout, interval time.Duration, ready func() error) error {
	var last error
	ok := Eventually(timeout, interval, func() bool {
		if p.Exited() {
			return true
		}
		last = ready()
		return last == nil
	})
	switch {
	case p.Exited():
		return fmt.Errorf("%s exited before it was ready: %v\n%s", p.Name, p.Err(), p.Out.Tail(16<<10))
	case !ok:
		return fmt.Errorf("%s not ready within %v: %v\n%s", p.Name, timeout, last, p.Out.Tail(16<<10))
	}
	return nil
}

// PID is the process's id.
func (p *Proc) PID() int { return p.Cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is the process's exit error; valid once Done is closed.
func (p *Proc) Err() error {
	<-p.done
	return p.waitErr
}

// Stop sends StopSignal and waits up to StopTimeout for the process to
// exit, then SIGKILLs it (its group, with Setpgid) and waits. It reports
// whether the process exited by itself after the signal; false also when it
// had exited before.
func (p *Proc) Stop() bool {
	if p.Exited() {
		return false
	}
	_ = p.Cmd.Process.Signal(p.cfg.StopSignal)
	select {
	case <-p.done:
		return true
	case <-time.After(p.cfg.StopTimeout):
	}
	if p.cfg.Setpgid {
		_ = syscall.Kill(-p.PID(), syscall.SIGKILL)
	}
	p.Kill()
	return false
}

// Kill SIGKILLs the process itself (not its children) and waits for it to
// exit.
func (p *Proc) Kill() {
	_ = p.Cmd.Process.Kill()
	<-p.done
}

// CleanEnv is the caller's environment without THAW_* and OTEL_*
// variables, so a developer's shell cannot change what a child sees.
func CleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "THAW_") || strings.HasPrefix(kv, "OTEL_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}
