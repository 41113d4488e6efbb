// Package nomadtest holds the end-to-end tests of thaw's Nomad runtime
// against a real one-node Nomad (bin/nomad, `nomad agent -dev`) with the
// fake GPU device plugin (bin/plugins/thaw-fakegpu): 4 x "NVIDIA H100 80GB
// HBM3" and 2 x "NVIDIA A100-SXM4-80GB". `make deps` builds both. Without
// them the tests skip, except with CI set, where they fail.
package nomadtest

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/thawhq/thaw/test/testnet"

	"github.com/hashicorp/nomad/api"
)

// Fake GPUs of the test agent.
const (
	h100 = "NVIDIA H100 80GB HBM3"
	a100 = "NVIDIA A100-SXM4-80GB"
)

// Set up once by TestMain.
var (
	root     string // repository root
	thawBin  string // thaw built for this run
	nomadURL string // http://127.0.0.1:<port> of the test agent
	// setupErr says why the topology could not start; skipSetup says it
	// is missing on a developer machine (not CI), where tests skip.
	setupErr  string
	skipSetup bool
	agentOut  = &syncBuffer{}
	// nomadPath and pluginPath are bin/nomad and the fake GPU plugin.
	nomadPath, pluginPath string
)

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	tmp, err := os.MkdirTemp("", "thaw-nomad-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkdir temp:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	stop, err := setup(tmp)
	if err != nil {
		setupErr = err.Error()
	}
	code := m.Run()
	if stop != nil {
		if err := stop(); err != nil {
			fmt.Fprintln(os.Stderr, "nomad e2e teardown:", err)
			code = 1
		}
	}
	return code
}

// needCluster skips or fails the test when the topology is missing.
func needCluster(t *testing.T) {
	t.Helper()
	if setupErr == "" {
		return
	}
	if skipSetup {
		t.Skipf("Nomad e2e: %s (run `make deps`; with CI set this fails)", setupErr)
	}
	t.Fatalf("Nomad e2e setup: %s", setupErr)
}

func setup(tmp string) (stop func() error, err error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return nil, fmt.Errorf("go env GOMOD: %w", err)
	}
	root = filepath.Dir(strings.TrimSpace(string(out)))
	nomadBin := filepath.Join(root, "bin", "nomad")
	plugin := filepath.Join(root, "bin", "plugins", "thaw-fakegpu")
	nomadPath, pluginPath = nomadBin, plugin
	for _, p := range []string{nomadBin, plugin, filepath.Join(root, "bin", "redis-server")} {
		if _, err := os.Stat(p); err != nil {
			skipSetup = os.Getenv("CI") == ""
			return nil, fmt.Errorf("%s missing", p)
		}
	}
	// THAW_BIN: a thaw binary built already (make e2e builds bin/thaw).
	if thawBin = os.Getenv("THAW_BIN"); thawBin == "" {
		thawBin = filepath.Join(tmp, "thaw")
		build := exec.Command("go", "build", "-o", thawBin, "./cmd/thaw")
		build.Dir = root
		if out, err := build.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build ./cmd/thaw: %v\n%s", err, out)
		}
	}

	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	nomadURL = fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	dataDir := filepath.Join(tmp, "nomad")
	conf := fmt.Sprintf(`data_dir = %q
plugin_dir = %q
disable_update_check = true
ports {
  http = %d
  rpc  = %d
  serf = %d
}
client {
  options {
    "fingerprint.denylist" = "env_aws,env_gce,env_azure,env_digitalocean"
  }
}
plugin "thaw-fakegpu" {
  config {
    gpus = "%s:4,%s:2"
  }
}
`, dataDir, filepath.Dir(plugin), ports[0], ports[1], ports[2], h100, a100)
	confPath := filepath.Join(tmp, "agent.hcl")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	agent := exec.Command(nomadBin, "agent", "-dev", "-bind", "127.0.0.1", "-network-interface", "lo", "-config", confPath)
	agent.Stdout, agent.Stderr = agentOut, agentOut
	// Everything the agent starts (plugins, logmon, executors, tasks)
	// inherits a working directory under tmp, which is how teardown finds
	// what it leaves behind.
	agent.Dir = tmp
	agent.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := agent.Start(); err != nil {
		return nil, fmt.Errorf("start nomad agent: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = agent.Wait(); close(exited) }()
	stop = func() error { return teardown(agent, exited, tmp) }

	nc := nomadClient()
	ok := waitFor(60*time.Second, 250*time.Millisecond, func() bool {
		nodes, _, err := nc.Nodes().List(&api.QueryOptions{Params: map[string]string{"resources": "true"}})
		if err != nil || len(nodes) != 1 || nodes[0].Status != "ready" || nodes[0].NodeResources == nil {
			return false
		}
		n := 0
		for _, d := range nodes[0].NodeResources.Devices {
			if d.Vendor == "nvidia" && d.Type == "gpu" {
				n += len(d.Instances)
			}
		}
		return n == 6
	})
	if !ok {
		return stop, fmt.Errorf("nomad node with 6 fake GPUs not ready within 60s; agent output:\n%s", agentOut.tail(8<<10))
	}
	return stop, nil
}

// teardown purges thaw's jobs, waits for their allocations to end, stops
// the agent and kills any process left working in dir.
func teardown(agent *exec.Cmd, exited chan struct{}, dir string) error {
	nc := nomadClient()
	if stubs, _, err := nc.Jobs().List(nil); err == nil {
		for _, j := range stubs {
			_, _, _ = nc.Jobs().Deregister(j.ID, true, nil)
		}
	}
	waitFor(30*time.Second, 200*time.Millisecond, func() bool {
		allocs, _, err := nc.Allocations().List(nil)
		if err != nil {
			return true
		}
		for _, a := range allocs {
			if a.ClientStatus == "running" || a.ClientStatus == "pending" {
				return false
			}
		}
		return true
	})
	_ = agent.Process.Signal(syscall.SIGINT)
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		_ = agent.Process.Kill()
		<-exited
	}
	var left []string
	for _, pid := range procsIn(dir) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	time.Sleep(500 * time.Millisecond)
	for _, pid := range procsIn(dir) {
		// Nomad 1.10's agent does not always stop its device plugins and
		// log monitors on exit; tasks (simulators) left are failures.
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if exe == pluginPath || exe == nomadPath || len(cmdline) == 0 { // zombie
			continue
		}
		left = append(left, fmt.Sprintf("%d (%.60s)", pid, strings.ReplaceAll(string(cmdline), "\x00", " ")))
	}
	// Nomad leaves the secrets/private tmpfs of recently stopped
	// allocations mounted; unmount them so the temp dir can be removed.
	if mounts, err := os.ReadFile("/proc/mounts"); err == nil {
		var mps []string
		for _, line := range strings.Split(string(mounts), "\n") {
			if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], dir+"/") {
				mps = append(mps, f[1])
			}
		}
		slices.Sort(mps)
		for _, mp := range slices.Backward(mps) {
			_ = syscall.Unmount(mp, syscall.MNT_DETACH)
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("processes the agent started were left after it stopped (killed): %s", strings.Join(left, ", "))
	}
	return nil
}

// procsIn returns the processes whose working directory is dir or below.
func procsIn(dir string) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cwd, _ := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if cwd == dir || strings.HasPrefix(cwd, dir+"/") {
			out = append(out, pid)
		}
	}
	return out
}

func nomadClient() *api.Client {
	c, err := api.NewClient(&api.Config{Address: nomadURL})
	if err != nil {
		panic(err) // only fails on a malformed config
	}
	return c
}

func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		p, err := testnet.FreePort()
		if err != nil {
			return nil, err
		}
		ports = append(ports, p)
	}
	return ports, nil
}

// waitFor polls cond every interval until it holds or timeout passes.
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

// httpGet returns the status of GET url ("" on a transport error).
func httpGet(ctx context.Context, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) tail(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.b.Bytes()
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
