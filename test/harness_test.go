package test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/thawhq/thaw/test/testnet"
)

// devToken is the API token of user "dev" in every thaw started here.
const devToken = "tok-dev-e2e"

// thawBin is the thaw binary built once by TestMain; buildErr is set when
// the build failed, and every test that needs the binary reports it.
var (
	thawBin  string
	buildErr string
)

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "thaw-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkdir temp:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	thawBin = filepath.Join(dir, "thaw")
	root, err := repoRoot()
	if err != nil {
		buildErr = err.Error()
		return m.Run()
	}
	cmd := exec.Command("go", "build", "-o", thawBin, "./cmd/thaw")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		buildErr = fmt.Sprintf("go build ./cmd/thaw: %v\n%s", err, out)
	}
	return m.Run()
}

// repoRoot is the directory of the module's go.mod.
func repoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside a Go module")
	}
	return filepath.Dir(gomod), nil
}

// thawOpts are the flags of one `thaw dev`. Zero values pick the test
// defaults noted on each field (fast simulator, long idle and hold timeouts).
type thawOpts struct {
	SimStartup      time.Duration // --sim-startup; default 500ms
	TokensPerSecond int           // --sim-tokens-per-second; default 200
	IdleTimeout     time.Duration // --idle-timeout; default 2m
	HoldTimeout     time.Duration // --hold-timeout; default 60s
	GPUs            string        // --gpus; "" leaves thaw's default
	GPUQuota        int           // --gpu-quota; 0 leaves thaw's default
	Users           []string      // --user name=token, repeated
	RedisAddr       string        // --redis-addr; "" uses the embedded one
	DataDir         string        // --data-dir; "" makes a fresh one
	Env             []string      // extra environment, e.g. OTEL_* settings
	SimRequestLog   string        // --sim-request-log file; "" leaves it off
	BodyTimeout     time.Duration // --body-timeout; 0 leaves thaw's default
	ConnIdleTimeout time.Duration // --conn-idle-timeout; 0 leaves thaw's default
}

// thawProc is one running `thaw dev`.
type thawProc struct {
	t     *testing.T
	label string
	Base  string // http://127.0.0.1:port
	// Metrics is the operators' listener (--metrics-addr), http://127.0.0.1:port.
	Metrics string
	DataDir string
	cmd     *exec.Cmd
	out     *syncBuffer
	done    chan struct{} // closed when the process has exited
	waitErr error         // set before done is closed

	// mu guards seen.
	mu sync.Mutex
	// seen are the simulator processes observed under this thaw; cleanup
	// kills any of them still alive, so a failing test leaks nothing.
	seen map[int]procInfo
}

var thawCount struct {
	sync.Mutex
	n int
}

// startThaw starts `thaw dev` with opts, waits until GET /healthz is 200 and
// registers a cleanup that stops it and, if the test failed, logs its
// output.
func startThaw(t *testing.T, opts thawOpts) *thawProc {
	t.Helper()
	if buildErr != "" {
		t.Fatalf("cannot run thaw: %s", buildErr)
	}
	if opts.SimStartup == 0 {
		opts.SimStartup = 500 * time.Millisecond
	}
	if opts.TokensPerSecond == 0 {
		opts.TokensPerSecond = 200
	}
	if opts.IdleTimeout == 0 {
		opts.IdleTimeout = 2 * time.Minute
	}
	if opts.HoldTimeout == 0 {
		opts.HoldTimeout = time.Minute
	}
	if opts.DataDir == "" {
		opts.DataDir = t.TempDir()
	}
	addr, metricsAddr := freeAddr(t), freeAddr(t)
	args := []string{"dev",
		"--addr", addr,
		"--metrics-addr", metricsAddr,
		"--data-dir", opts.DataDir,
		"--sim-startup", opts.SimStartup.String(),
		"--sim-tokens-per-second", strconv.Itoa(opts.TokensPerSecond),
		"--idle-timeout", opts.IdleTimeout.String(),
		"--hold-timeout", opts.HoldTimeout.String(),
	}
	if opts.GPUs != "" {
		args = append(args, "--gpus", opts.GPUs)
	}
	if opts.GPUQuota != 0 {
		args = append(args, "--gpu-quota", strconv.Itoa(opts.GPUQuota))
	}
	for _, u := range opts.Users {
		args = append(args, "--user", u)
	}
	if opts.RedisAddr != "" {
		args = append(args, "--redis-addr", opts.RedisAddr)
	}
	if opts.SimRequestLog != "" {
		args = append(args, "--sim-request-log", opts.SimRequestLog)
	}
	if opts.BodyTimeout != 0 {
		args = append(args, "--body-timeout", opts.BodyTimeout.String())
	}
	if opts.ConnIdleTimeout != 0 {
		args = append(args, "--conn-idle-timeout", opts.ConnIdleTimeout.String())
	}
	thawCount.Lock()
	thawCount.n++
	label := fmt.Sprintf("thaw#%d %s", thawCount.n, addr)
	thawCount.Unlock()

	p := &thawProc{
		t: t, label: label, Base: "http://" + addr, Metrics: "http://" + metricsAddr, DataDir: opts.DataDir,
		out: &syncBuffer{}, done: make(chan struct{}), seen: map[int]procInfo{},
	}
	p.cmd = exec.Command(thawBin, args...)
	p.cmd.Env = append(append(cleanEnv(), "THAW_DEV_TOKEN="+devToken), opts.Env...)
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", thawBin, err)
	}
	t.Logf("%s: thaw %s", label, strings.Join(args, " "))
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop()
		p.killLeftovers()
		if t.Failed() {
			t.Logf("%s output (tail):\n%s", label, p.out.tail(24<<10))
		}
	})
	p.waitHealthy(30 * time.Second)
	return p
}

// cleanEnv is the test's environment without THAW_* and OTEL_* variables,
// so a developer's shell cannot change what the tests see.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "THAW_") || strings.HasPrefix(kv, "OTEL_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// freeAddr returns a loopback address with a port that was free just now.
func freeAddr(t *testing.T) string {
	t.Helper()
	a, err := testnet.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// waitHealthy polls GET /healthz until 200, the process exits, or timeout.
func (p *thawProc) waitHealthy(timeout time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-p.done:
			p.t.Fatalf("%s exited before it was healthy: %v\n%s", p.label, p.waitErr, p.out.tail(16<<10))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.Base+"/healthz", nil)
		resp, err := httpClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		cancel()
		if err == nil && resp.StatusCode == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s: GET /healthz not 200 within %v (last: %v)\n%s", p.label, timeout, errOrStatus(resp, err), p.out.tail(16<<10))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func errOrStatus(resp *http.Response, err error) string {
	if err != nil {
		return err.Error()
	}
	return resp.Status
}

// exited reports whether the process has exited.
func (p *thawProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// noteSims records the simulator processes currently under this thaw and
// returns them.
func (p *thawProc) noteSims() []procInfo {
	sims := simsUnder(p.cmd.Process.Pid)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range sims {
		p.seen[s.PID] = s
	}
	return sims
}

// stop sends SIGTERM and waits up to 15s for the process to exit, then
// SIGKILLs it. It reports whether thaw exited by itself after SIGTERM.
func (p *thawProc) stop() bool {
	if p.exited() {
		return false
	}
	p.noteSims()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return true
	case <-time.After(15 * time.Second):
	}
	p.t.Errorf("%s did not exit within 15s of SIGTERM; killing it", p.label)
	_ = p.cmd.Process.Kill()
	<-p.done
	return false
}

// kill9 SIGKILLs thaw itself (not its children) and waits for it to exit.
func (p *thawProc) kill9() {
	if p.exited() {
		return
	}
	p.noteSims()
	_ = p.cmd.Process.Kill()
	<-p.done
}

// killLeftovers SIGKILLs, one by one, the simulators seen under this thaw
// and the members of its process group that are still alive.
func (p *thawProc) killLeftovers() {
	p.mu.Lock()
	var left []procInfo
	for _, s := range p.seen {
		left = append(left, s)
	}
	p.mu.Unlock()
	left = append(left, procsInGroup(p.cmd.Process.Pid)...)
	for _, s := range left {
		if s.alive() {
			_ = syscall.Kill(s.PID, syscall.SIGKILL)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writes and reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// tail returns the last n bytes written.
func (s *syncBuffer) tail(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.b.Bytes()
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// String returns everything written so far.
func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor polls cond every interval until it is true or timeout passes,
// and reports whether it became true.
func waitFor(timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
}
