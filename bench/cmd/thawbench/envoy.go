package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// envoyProc is one Envoy started by the bench, with --concurrency 1.
type envoyProc struct {
	Admin string // http://127.0.0.1:port of its admin interface
	cmd   *exec.Cmd
	dir   string
	done  chan struct{}
}

// envoyBinFor is bin/envoy next to the thaw binary.
func envoyBinFor(thawBin string) string {
	return filepath.Join(filepath.Dir(thawBin), "envoy")
}

// startEnvoy runs bin with the bootstrap config and waits until its admin
// answers /ready with LIVE.
func startEnvoy(bin string, config []byte, admin string) (*envoyProc, error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("envoy: %w (run make deps)", err)
	}
	dir, err := os.MkdirTemp("", "thawbench-envoy-")
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "envoy.json")
	if err := os.WriteFile(conf, config, 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "envoy.log"))
	if err != nil {
		return nil, err
	}
	e := &envoyProc{Admin: "http://" + admin, dir: dir, done: make(chan struct{})}
	e.cmd = exec.Command(bin, "-c", conf, "--disable-hot-restart", "--concurrency", "1", "--log-level", "warn")
	e.cmd.Stdout, e.cmd.Stderr = logf, logf
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := e.cmd.Start(); err != nil {
		logf.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start envoy: %w", err)
	}
	go func() { _ = e.cmd.Wait(); logf.Close(); close(e.done) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if resp, err := http.Get(e.Admin + "/ready"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.TrimSpace(string(b)) == "LIVE" {
				return e, nil
			}
		}
		select {
		case <-e.done:
			log := e.logTail()
			e.Stop()
			return nil, fmt.Errorf("envoy exited at start:\n%s", log)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			log := e.logTail()
			e.Stop()
			return nil, fmt.Errorf("envoy not ready within 20s:\n%s", log)
		}
	}
}

func (e *envoyProc) logTail() string {
	b, _ := os.ReadFile(filepath.Join(e.dir, "envoy.log"))
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 12 {
		lines = lines[len(lines)-12:]
	}
	return strings.Join(lines, "\n")
}

// Stop ends Envoy (SIGTERM, then SIGKILL after 5 s) and removes its files.
func (e *envoyProc) Stop() {
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-e.cmd.Process.Pid, syscall.SIGKILL)
		<-e.done
	}
	os.RemoveAll(e.dir)
}

// Stat is one counter or gauge from Envoy's admin, -1 when absent.
func (e *envoyProc) Stat(ctx context.Context, name string) (int64, error) {
	u := e.Admin + "/stats?safe&filter=" + url.QueryEscape("^"+strings.ReplaceAll(name, ".", `\.`)+"$")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+": "); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return -1, sc.Err()
}

// HostStats maps each host of the cluster to the value of stat, from
// Envoy's /clusters ("cluster::host::stat::value" lines).
func (e *envoyProc) HostStats(ctx context.Context, cluster, stat string) (map[string]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.Admin+"/clusters", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return parseHostStats(resp.Body, cluster, stat)
}

// parseHostStats reads Envoy's /clusters text format.
func parseHostStats(r io.Reader, cluster, stat string) (map[string]string, error) {
	out := map[string]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		parts := strings.Split(sc.Text(), "::")
		if len(parts) == 4 && parts[0] == cluster && parts[2] == stat {
			out[parts[1]] = parts[3]
		}
	}
	return out, sc.Err()
}

// staticEnvoyConfig is an Envoy bootstrap with one listener on listen
// routing everything to one STATIC cluster at upstream: no thaw, no
// ext_authz, no xDS (Envoy's own floor).
func staticEnvoyConfig(listen, admin, upstream string) ([]byte, error) {
	sock := func(addr string) (map[string]any, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, err
		}
		return map[string]any{"socket_address": map[string]any{"address": host, "port_value": p}}, nil
	}
	la, err := sock(listen)
	if err != nil {
		return nil, err
	}
	aa, err := sock(admin)
	if err != nil {
		return nil, err
	}
	ua, err := sock(upstream)
	if err != nil {
		return nil, err
	}
	hcm := map[string]any{
		"@type":       "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
		"stat_prefix": "static",
		"route_config": map[string]any{"virtual_hosts": []any{map[string]any{
			"name": "all", "domains": []string{"*"},
			"routes": []any{map[string]any{"match": map[string]any{"prefix": "/"}, "route": map[string]any{"cluster": "sim", "timeout": "0s"}}},
		}}},
		"http_filters": []any{map[string]any{"name": "envoy.filters.http.router", "typed_config": map[string]any{
			"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}},
	}
	return json.MarshalIndent(map[string]any{
		"admin": map[string]any{"address": aa},
		"static_resources": map[string]any{
			"listeners": []any{map[string]any{"name": "static", "address": la, "filter_chains": []any{map[string]any{
				"filters": []any{map[string]any{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}},
			}}}},
			"clusters": []any{map[string]any{
				"name": "sim", "type": "STATIC", "connect_timeout": "2s",
				"load_assignment": map[string]any{"cluster_name": "sim", "endpoints": []any{map[string]any{
					"lb_endpoints": []any{map[string]any{"endpoint": map[string]any{"address": ua}}},
				}}},
			}},
		},
	}, "", "  ")
}
