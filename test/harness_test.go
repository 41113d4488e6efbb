package test

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/thawhq/thaw/test/e2e"
)

// devToken is the API token of user "dev" in every thaw started here.
const devToken = "tok-dev-e2e"

// thawBin is the thaw binary (e2e.ThawBin: $THAW_BIN, or built once by
// TestMain); buildErr is set when there is none, and every test that needs
// the binary reports it.
var (
	thawBin  string
	buildErr error
)

func TestMain(m *testing.M) {
	thawBin, buildErr = e2e.ThawBin()
	os.Exit(e2e.Main(m))
}

// repoRoot is the directory of the module's go.mod.
func repoRoot() (string, error) { return e2e.RepoRoot() }

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
	Args            []string      // further flags, as given
}

// thawProc is one running `thaw dev`.
type thawProc struct {
	*e2e.Thaw
	t       *testing.T
	DataDir string

	// mu guards seen.
	mu sync.Mutex
	// seen are the simulator processes observed under this thaw; cleanup
	// kills any of them still alive, so a failing test leaks nothing.
	seen map[int]procInfo
}

// startThaw starts `thaw dev` with opts, waits until GET /healthz is 200 and
// registers a cleanup that stops it and, if the test failed, logs its
// output.
func startThaw(t *testing.T, opts thawOpts) *thawProc {
	t.Helper()
	if buildErr != nil {
		t.Fatalf("cannot run thaw: %v", buildErr)
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
	args := []string{"dev",
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
	args = append(args, opts.Args...)
	th, err := e2e.StartThaw(e2e.ThawConfig{
		Bin:  thawBin,
		Args: args,
		Env:  append([]string{"THAW_DEV_TOKEN=" + devToken}, opts.Env...),
		Proc: e2e.ProcConfig{Setpgid: true, StopTimeout: 15 * time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	p := &thawProc{Thaw: th, t: t, DataDir: opts.DataDir, seen: map[int]procInfo{}}
	t.Logf("%s: thaw %s", p.Name, strings.Join(args, " "))
	t.Cleanup(func() {
		p.stop()
		p.killLeftovers()
		if t.Failed() {
			t.Logf("%s output (tail):\n%s", p.Name, p.Out.Tail(24<<10))
		}
	})
	return p
}

// freeAddr returns a loopback address with a port that was free just now.
func freeAddr(t *testing.T) string { return e2e.FreeAddrT(t) }

// exited reports whether the process has exited.
func (p *thawProc) exited() bool { return p.Exited() }

// noteSims records the simulator processes currently under this thaw and
// returns them.
func (p *thawProc) noteSims() []procInfo {
	sims := simsUnder(p.PID())
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
	if !p.Stop() {
		p.t.Errorf("%s did not exit within 15s of SIGTERM; killed it", p.Name)
		return false
	}
	return true
}

// kill9 SIGKILLs thaw itself (not its children) and waits for it to exit.
func (p *thawProc) kill9() {
	if p.exited() {
		return
	}
	p.noteSims()
	p.Kill()
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
	left = append(left, procsInGroup(p.PID())...)
	for _, s := range left {
		if s.alive() {
			_ = syscall.Kill(s.PID, syscall.SIGKILL)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writes and reads.
type syncBuffer = e2e.Buffer

// waitFor polls cond every interval until it is true or timeout passes,
// and reports whether it became true.
func waitFor(timeout, interval time.Duration, cond func() bool) bool {
	return e2e.Eventually(timeout, interval, cond)
}
