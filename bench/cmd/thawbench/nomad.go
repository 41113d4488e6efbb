package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// nomadGPUs are the fake GPUs of the bench's agent.
const nomadGPUs = "NVIDIA H100 80GB HBM3:4"

// nomadCluster is a one-node `nomad agent -dev` with thaw's fake GPU
// plugin, plus a Redis: what `make cluster` starts, on free ports.
type nomadCluster struct {
	URL    string // http://127.0.0.1:port of the agent's HTTP API
	Redis  string // 127.0.0.1:port
	tmp    string
	agent  *exec.Cmd
	redis  *exec.Cmd
	exited chan struct{}
}

// startNomad starts Redis and the agent from binDir (bin/) and waits until
// the node is ready with its 4 fake GPUs.
func startNomad(binDir string) (*nomadCluster, error) {
	for _, f := range []string{"nomad", "redis-server", "plugins/thaw-fakegpu"} {
		if _, err := os.Stat(filepath.Join(binDir, f)); err != nil {
			return nil, fmt.Errorf("%w (run make deps)", err)
		}
	}
	tmp, err := os.MkdirTemp("", "thawbench-nomad-")
	if err != nil {
		return nil, err
	}
	c := &nomadCluster{tmp: tmp, exited: make(chan struct{})}
	var ports []int
	for range 4 {
		a, err := freeAddr()
		if err != nil {
			return nil, err
		}
		_, p, _ := net.SplitHostPort(a)
		n, _ := strconv.Atoi(p)
		ports = append(ports, n)
	}
	c.Redis = fmt.Sprintf("127.0.0.1:%d", ports[3])
	c.redis = exec.Command(filepath.Join(binDir, "redis-server"), "--bind", "127.0.0.1", "--port", strconv.Itoa(ports[3]),
		"--save", "", "--appendonly", "no", "--dir", tmp)
	c.redis.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := c.redis.Start(); err != nil {
		return nil, fmt.Errorf("start redis: %w", err)
	}
	abs, err := filepath.Abs(binDir)
	if err != nil {
		return nil, err
	}
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
    gpus = %q
  }
}
`, filepath.Join(tmp, "nomad"), filepath.Join(abs, "plugins"), ports[0], ports[1], ports[2], nomadGPUs)
	if err := os.WriteFile(filepath.Join(tmp, "agent.hcl"), []byte(conf), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(tmp, "nomad.log"))
	if err != nil {
		return nil, err
	}
	c.URL = fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	c.agent = exec.Command(filepath.Join(abs, "nomad"), "agent", "-dev", "-bind", "127.0.0.1", "-network-interface", "lo",
		"-config", filepath.Join(tmp, "agent.hcl"))
	c.agent.Stdout, c.agent.Stderr = logf, logf
	// Everything the agent starts inherits this working directory, which is
	// how Stop finds what it leaves behind.
	c.agent.Dir = tmp
	c.agent.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := c.agent.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start nomad agent: %w", err)
	}
	go func() { _ = c.agent.Wait(); logf.Close(); close(c.exited) }()
	deadline := time.Now().Add(60 * time.Second)
	for !c.ready() {
		if time.Now().After(deadline) {
			c.Stop()
			return nil, fmt.Errorf("nomad node with fake GPUs not ready within 60s (log %s)", filepath.Join(tmp, "nomad.log"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	return c, nil
}

// ready: one node, ready, with the fake GPUs fingerprinted.
func (c *nomadCluster) ready() bool {
	var nodes []struct {
		Status        string
		NodeResources *struct{ Devices []struct{ Instances []any } }
	}
	if c.getJSON("/v1/nodes?resources=true", &nodes) != nil || len(nodes) != 1 || nodes[0].Status != "ready" || nodes[0].NodeResources == nil {
		return false
	}
	n := 0
	for _, d := range nodes[0].NodeResources.Devices {
		n += len(d.Instances)
	}
	if n < 4 {
		return false
	}
	// thaw server keeps deployments in Nomad Variables, which need the
	// keyring: a fresh dev agent has none for its first seconds.
	var keys []struct{ State string }
	if c.getJSON("/v1/operator/keyring/keys", &keys) != nil {
		return false
	}
	for _, k := range keys {
		if k.State == "active" {
			return true
		}
	}
	return false
}

func (c *nomadCluster) getJSON(path string, out any) error {
	cl := http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get(c.URL + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// liveAllocs counts allocations pending or running.
func (c *nomadCluster) liveAllocs() (int, error) {
	var allocs []struct{ ClientStatus string }
	if err := c.getJSON("/v1/allocations", &allocs); err != nil {
		return 0, err
	}
	n := 0
	for _, a := range allocs {
		if a.ClientStatus == "running" || a.ClientStatus == "pending" {
			n++
		}
	}
	return n, nil
}

// waitNoAllocs waits up to timeout until no allocation is pending or running.
func (c *nomadCluster) waitNoAllocs(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		n, err := c.liveAllocs()
		if err == nil && n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nomad: %d allocations still live after %v (%v)", n, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startServer starts `thaw server --engine sim` against the cluster with
// extra flags; user dev's token is the bench's token.
func (c *nomadCluster) startServer(bin string, extra ...string) (*thawProc, error) {
	dir, err := os.MkdirTemp("", "thawbench-server-")
	if err != nil {
		return nil, err
	}
	h := sha256.Sum256([]byte(token))
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(users, []byte("dev sha256:"+hex.EncodeToString(h[:])+"\n"), 0o600); err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	args := append([]string{"server", "--engine", "sim", "--addr", addr, "--nomad-addr", c.URL, "--redis-addr", c.Redis,
		"--data-dir", dir, "--users-file", users, "--adopt-grace", "1s"}, extra...)
	return launchThaw(bin, dir, addr, args)
}

// Stop purges every job, waits for their allocations to end, stops the
// agent and Redis, kills anything left working in the agent's directory
// (Nomad 1.10 leaves its device plugins running), unmounts what Nomad left
// mounted there and removes it.
func (c *nomadCluster) Stop() {
	var jobs []struct{ ID string }
	if c.getJSON("/v1/jobs", &jobs) == nil {
		for _, j := range jobs {
			req, _ := http.NewRequest(http.MethodDelete, c.URL+"/v1/job/"+j.ID+"?purge=true", nil)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}
		_ = c.waitNoAllocs(30 * time.Second)
	}
	_ = c.agent.Process.Signal(syscall.SIGINT)
	select {
	case <-c.exited:
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-c.agent.Process.Pid, syscall.SIGKILL)
		<-c.exited
	}
	_ = c.redis.Process.Kill()
	_ = c.redis.Wait()
	for _, pid := range procsIn(c.tmp) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if mounts, err := os.ReadFile("/proc/mounts"); err == nil {
		var mps []string
		for _, line := range strings.Split(string(mounts), "\n") {
			if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], c.tmp+"/") {
				mps = append(mps, f[1])
			}
		}
		slices.Sort(mps)
		for _, mp := range slices.Backward(mps) {
			_ = syscall.Unmount(mp, syscall.MNT_DETACH)
		}
	}
	time.Sleep(200 * time.Millisecond)
	os.RemoveAll(c.tmp)
}

// procsIn lists the processes whose working directory is dir or below.
func procsIn(dir string) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		if err == nil && (cwd == dir || strings.HasPrefix(cwd, dir+"/")) {
			out = append(out, pid)
		}
	}
	return out
}
