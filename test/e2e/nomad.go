package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/thawhq/thaw/test/testnet"
)

// NomadConfig says how to start a one-node `nomad agent -dev` with thaw's
// fake GPU device plugin. Zero values pick the defaults noted on each field.
type NomadConfig struct {
	// Bin is the nomad binary; default bin/nomad.
	Bin string
	// PluginDir holds thaw-fakegpu; default bin/plugins.
	PluginDir string
	// GPUs is the plugin's gpus setting, "<name>:<count>,..."; required.
	GPUs string
	// Dir is the agent's data and working directory; required. Everything
	// the agent starts inherits it, which is how Stop finds what is left.
	Dir string
	// Ready is how long StartNomad waits for the node; default 60s.
	Ready time.Duration
	// ACL enables Nomad's ACL system; StartNomad bootstraps it and keeps
	// the management token in Nomad.Token, which the harness's own calls
	// send.
	ACL bool
	// Persistent runs a server (bootstrap_expect 1) and client agent
	// that keeps its state in Dir instead of `nomad agent -dev`, whose
	// state lives in memory and whose client stops every task when it
	// stops. Only such an agent can Halt and Resume: its jobs, Variables
	// (locks included) and allocations survive, and tasks keep running
	// while it is down.
	Persistent bool
	// TLS, when set, serves the agent's HTTP API and RPC over mutual TLS
	// with its certificates (see NomadTLS); URL is then https://.
	TLS *NomadTLS
}

// Nomad is one running agent. Its methods are not safe for concurrent use
// with Halt and Resume, which replace Proc.
type Nomad struct {
	*Proc        // the agent process, the one started last
	URL   string // http://127.0.0.1:port of its HTTP API
	// Token is the management token's secret ID with NomadConfig.ACL,
	// else empty.
	Token string
	cfg   NomadConfig
	args  []string // the agent's command line
	gpus  int      // fake GPUs its node must have to be ready
}

// StartNomad starts the agent and waits until its one node is ready with
// every fake GPU fingerprinted and the keyring (which Nomad Variables, where
// thaw server keeps deployments, need) has an active key.
func StartNomad(cfg NomadConfig) (*Nomad, error) {
	var err error
	if err = orFind(&cfg.Bin, func() (string, error) { return RepoBin("nomad") }); err != nil {
		return nil, err
	}
	if cfg.PluginDir == "" {
		plugin, err := RepoBin("plugins/thaw-fakegpu")
		if err != nil {
			return nil, err
		}
		cfg.PluginDir = filepath.Dir(plugin)
	}
	if cfg.Ready == 0 {
		cfg.Ready = 60 * time.Second
	}
	want := 0
	for _, g := range strings.Split(cfg.GPUs, ",") {
		_, n, _ := strings.Cut(g, ":")
		c, err := strconv.Atoi(n)
		if err != nil {
			return nil, fmt.Errorf("nomad: gpus %q: want <name>:<count>,...", cfg.GPUs)
		}
		want += c
	}
	var ports [3]int
	for i := range ports {
		if ports[i], err = testnet.FreePort(); err != nil {
			return nil, err
		}
	}
	confPath := filepath.Join(cfg.Dir, "agent.hcl")
	if err := os.WriteFile(confPath, []byte(agentConfig(cfg, ports)), 0o600); err != nil {
		return nil, err
	}
	args := []string{cfg.Bin, "agent", "-bind", "127.0.0.1", "-network-interface", "lo", "-config", confPath}
	if !cfg.Persistent {
		args = slices.Insert(args, 2, "-dev")
	}
	n := &Nomad{URL: fmt.Sprintf("%s://127.0.0.1:%d", cfg.TLS.scheme(), ports[0]), cfg: cfg, args: args, gpus: want}
	if err := n.start(nil); err != nil {
		if n.Proc == nil {
			return nil, err
		}
		return nil, errors.Join(err, n.Stop())
	}
	return n, nil
}

// agentConfig is the agent's configuration file: ports, the fake GPU
// plugin and, for a persistent agent, what -dev would otherwise set (a
// server electing itself, a client, raw_exec).
func agentConfig(cfg NomadConfig, ports [3]int) string {
	client := ""
	if cfg.Persistent {
		client = "\n  enabled = true"
	}
	conf := fmt.Sprintf(`data_dir = %q
plugin_dir = %q
disable_update_check = true
ports {
  http = %d
  rpc  = %d
  serf = %d
}
client {%s
  options {
    "fingerprint.denylist" = "env_aws,env_gce,env_azure,env_digitalocean"
  }
}
plugin "thaw-fakegpu" {
  config {
    gpus = %q
  }
}
acl {
  enabled = %t
}
`, filepath.Join(cfg.Dir, "nomad"), cfg.PluginDir, ports[0], ports[1], ports[2], client, cfg.GPUs, cfg.ACL)
	conf += cfg.TLS.agentBlock()
	if cfg.Persistent {
		conf += `advertise {
  http = "127.0.0.1"
  rpc  = "127.0.0.1"
  serf = "127.0.0.1"
}
server {
  enabled          = true
  bootstrap_expect = 1
}
plugin "raw_exec" {
  config {
    enabled = true
  }
}
`
	}
	return conf
}

// start starts the agent process and waits until it is ready (see
// StartNomad), and, when again is not nil, until its client has
// registered with its server since it started (again says whether it
// has): a restarted agent's server answers at once with the node as it
// was before the stop, ready.
func (n *Nomad) start(again func() bool) error {
	p, err := Start(ProcConfig{
		Name:        "nomad agent",
		Args:        n.args,
		Dir:         n.cfg.Dir,
		Setpgid:     true,
		StopSignal:  syscall.SIGINT,
		StopTimeout: 20 * time.Second,
		Keep:        1 << 20,
	})
	if err != nil {
		return err
	}
	n.Proc = p
	return p.WaitReady(n.cfg.Ready, 200*time.Millisecond, func() error {
		if n.cfg.ACL && n.Token == "" {
			if err := n.bootstrap(); err != nil {
				return err
			}
		}
		if !n.ready(n.gpus) {
			return fmt.Errorf("no ready node with %d fake GPUs and an active key", n.gpus)
		}
		if again != nil && !again() {
			return errors.New("the client has not registered with the server since the restart")
		}
		return nil
	})
}

// Halt stops a persistent agent (SIGINT: server and client shut down
// without leaving, as a restart for an upgrade does) and waits for it to
// exit. Its tasks keep running; its state stays in Dir for Resume.
//
// Halt first has the server write a Raft snapshot, as a server that has
// run for a while (two minutes and 8192 changes, by default) has on disk.
// A young agent has none: restarted, its state is empty until its server
// elects itself and replays its log, and meanwhile its client, restoring
// its allocations, is refused ("pre-run hook group_services failed: rpc
// error: Permission denied") and kills them (Nomad 1.10.5; Nomad issue
// 23952 reports it after a cluster restart).
func (n *Nomad) Halt() error {
	if !n.cfg.Persistent {
		return errors.New("nomad: Halt needs NomadConfig.Persistent (a -dev agent loses its state and tasks)")
	}
	if n.Exited() {
		return fmt.Errorf("nomad agent exited before Halt: %v", n.Err())
	}
	if err := n.snapshot(); err != nil {
		return err
	}
	if !n.Proc.Stop() {
		return fmt.Errorf("nomad agent did not exit within %v of SIGINT (killed)", 20*time.Second)
	}
	return nil
}

// snapshot has the server take a Raft snapshot (the answer, a copy of it,
// is discarded) and checks it is on disk.
func (n *Nomad) snapshot() error {
	dir := filepath.Join(n.cfg.Dir, "nomad", "server", "raft", "snapshots")
	before, _ := os.ReadDir(dir)
	req, err := http.NewRequest(http.MethodGet, n.URL+"/v1/operator/snapshot", nil)
	if err != nil {
		return err
	}
	if n.Token != "" {
		req.Header.Set("X-Nomad-Token", n.Token)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("nomad: snapshot before the halt: %w", err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		return fmt.Errorf("nomad: snapshot before the halt: %s %v", resp.Status, err)
	}
	after, _ := os.ReadDir(dir)
	if !slices.ContainsFunc(after, func(e os.DirEntry) bool {
		return !slices.ContainsFunc(before, func(b os.DirEntry) bool { return b.Name() == e.Name() })
	}) {
		return fmt.Errorf("nomad: no new Raft snapshot in %s after GET /v1/operator/snapshot", dir)
	}
	return nil
}

// Resume starts a halted agent again on the same ports and data directory
// and waits until it is ready and its client has registered with its
// server again (it re-attaches to its running tasks as it does).
func (n *Nomad) Resume() error {
	if !n.cfg.Persistent || !n.Exited() {
		return errors.New("nomad: Resume needs a persistent agent that Halt stopped")
	}
	return n.start(n.clientRegistered)
}

// Restart halts the agent, waits down, and resumes it.
func (n *Nomad) Restart(down time.Duration) error {
	if err := n.Halt(); err != nil {
		return err
	}
	time.Sleep(down)
	return n.Resume()
}

// clientRegistered says whether the agent's client has heartbeated its
// server since the agent started: until it has, the agent's own stats
// give it no heartbeat TTL.
func (n *Nomad) clientRegistered() bool {
	var self struct {
		Stats struct {
			Client struct {
				HeartbeatTTL string `json:"heartbeat_ttl"`
			} `json:"client"`
		} `json:"stats"`
	}
	if n.GetJSON("/v1/agent/self", &self) != nil {
		return false
	}
	ttl, err := time.ParseDuration(self.Stats.Client.HeartbeatTTL)
	return err == nil && ttl > 0
}

// ready: one node, ready, with want GPUs, and an active key.
func (n *Nomad) ready(want int) bool {
	var nodes []struct {
		Status        string
		NodeResources *struct{ Devices []struct{ Instances []any } }
	}
	if n.GetJSON("/v1/nodes?resources=true", &nodes) != nil || len(nodes) != 1 || nodes[0].Status != "ready" || nodes[0].NodeResources == nil {
		return false
	}
	got := 0
	for _, d := range nodes[0].NodeResources.Devices {
		got += len(d.Instances)
	}
	if got != want {
		return false
	}
	var keys []struct{ State string }
	if n.GetJSON("/v1/operator/keyring/keys", &keys) != nil {
		return false
	}
	return slices.ContainsFunc(keys, func(k struct{ State string }) bool { return k.State == "active" })
}

// bootstrap makes the ACL system's management token (once the agent has
// elected itself leader) and keeps it in n.Token.
func (n *Nomad) bootstrap() error {
	var tok struct{ SecretID string }
	if err := n.Do(http.MethodPost, "/v1/acl/bootstrap", &tok); err != nil {
		return fmt.Errorf("ACL bootstrap: %w", err)
	}
	n.Token = tok.SecretID
	return nil
}

// GetJSON decodes the answer to GET path of the agent's HTTP API into out.
func (n *Nomad) GetJSON(path string, out any) error {
	return n.Do(http.MethodGet, path, out)
}

// Do sends a request without a body to the agent's HTTP API, with the
// management token when ACLs are on, and decodes a 200's JSON answer into
// out (nil: ignore it).
func (n *Nomad) Do(method, path string, out any) error {
	req, err := http.NewRequest(method, n.URL+path, nil)
	if err != nil {
		return err
	}
	if n.Token != "" {
		req.Header.Set("X-Nomad-Token", n.Token)
	}
	cl := http.Client{Timeout: 5 * time.Second, Transport: n.cfg.TLS.transport()}
	resp, err := cl.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s %s: %s %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// LiveAllocs counts the allocations pending or running.
func (n *Nomad) LiveAllocs() (int, error) {
	var allocs []struct{ ClientStatus string }
	if err := n.GetJSON("/v1/allocations", &allocs); err != nil {
		return 0, err
	}
	live := 0
	for _, a := range allocs {
		if a.ClientStatus == "running" || a.ClientStatus == "pending" {
			live++
		}
	}
	return live, nil
}

// WaitNoAllocs waits up to timeout until no allocation is pending or
// running.
func (n *Nomad) WaitNoAllocs(timeout time.Duration) error {
	var live int
	var err error
	if Eventually(timeout, 100*time.Millisecond, func() bool {
		live, err = n.LiveAllocs()
		return err == nil && live == 0
	}) {
		return nil
	}
	return fmt.Errorf("nomad: %d allocations still live after %v (%v)", live, timeout, err)
}

// Stop purges every job, waits for their allocations to end, stops the
// agent, kills what is left working in its directory and unmounts what
// Nomad left mounted there (the secrets/private tmpfs of recently stopped
// allocations), so the directory can be removed. It returns an error
// naming the processes other than the agent's own plugins and log monitors
// (Nomad 1.10 does not always stop those) that were left.
func (n *Nomad) Stop() error {
	var jobs []struct{ ID string }
	if n.GetJSON("/v1/jobs", &jobs) == nil {
		for _, j := range jobs {
			_ = n.Do(http.MethodDelete, "/v1/job/"+j.ID+"?purge=true", nil)
		}
		_ = n.WaitNoAllocs(30 * time.Second)
	}
	n.Proc.Stop()
	dir := n.cfg.Dir
	for _, pid := range ProcsIn(dir) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	time.Sleep(500 * time.Millisecond)
	var left []string
	for _, pid := range ProcsIn(dir) {
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if exe == filepath.Join(n.cfg.PluginDir, "thaw-fakegpu") || exe == n.cfg.Bin || len(cmdline) == 0 { // zombie
			continue
		}
		left = append(left, fmt.Sprintf("%d (%.60s)", pid, strings.ReplaceAll(string(cmdline), "\x00", " ")))
	}
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

// ProcsIn returns the processes whose working directory is dir or below.
func ProcsIn(dir string) []int {
	return ProcsWhere(func(pid int) bool {
		cwd, err := os.Readlink(ProcFile(pid, "cwd"))
		return err == nil && (cwd == dir || strings.HasPrefix(cwd, dir+"/"))
	})
}

// ProcsWhere returns the running processes that match says yes to.
func ProcsWhere(match func(pid int) bool) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil && match(pid) {
			out = append(out, pid)
		}
	}
	return out
}

// ProcFile is the path of one of /proc/<pid>'s files, e.g. "cmdline".
func ProcFile(pid int, name string) string {
	return filepath.Join("/proc", strconv.Itoa(pid), name)
}
