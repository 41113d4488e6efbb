package nomadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/thawhq/thaw/test/e2e"
)

// TestClusterScript runs scripts/cluster.sh (`make cluster`) on its own
// ports: it prints user dev's generated token, serves a deployment through
// its Nomad agent, and on SIGTERM (the same trap as Ctrl-C) stops
// everything, leaving no process behind.
func TestClusterScript(t *testing.T) {
	needCluster(t)
	c := e2e.StartClusterT(t, e2e.ClusterConfig{Bin: thawBin, Args: []string{"--sim-startup", "300ms"}, Dir: t.TempDir()})
	out, envoyAdmin, redisPort, base := c.Out, c.EnvoyAdmin, c.RedisPort, c.NomadPort
	m := []string{"", c.Edge, c.Token}
	if !strings.Contains(out.Tail(64<<10), "token of user dev (new") {
		t.Errorf("cluster.sh did not say it generated user dev's token")
	}
	if !strings.HasPrefix(m[1], "http://127.0.0.1:") {
		t.Errorf("cluster.sh points users at %s, want the Envoy edge on loopback", m[1])
	}
	s := &server{t: t, base: m[1]}
	token := m[2]
	name := uniqueName("cluster")
	r, err := s.doAs(token, "POST", "/deploy/llm", map[string]any{
		"model_name": name, "gpu": "A100-80GB", "num_gpus": 1, "max_batch_size": 4,
		"hf": map[string]any{"repo": "org/model"}, "settings": map[string]any{"min_instances": 0, "max_instances": 1},
	})
	if err != nil || r.Status != 200 {
		t.Fatalf("create: %v %s", err, r)
	}
	var created struct {
		ID string `json:"deploy_id"`
	}
	_ = json.Unmarshal(r.Body, &created)
	r, err = s.doAs(token, "POST", "/v1/openai/chat/completions", map[string]any{
		"model": "dev/" + name, "max_tokens": 5, "messages": []map[string]string{{"role": "user", "content": "hi"}},
	})
	if msg := checkChat(r, err); msg != "" {
		t.Fatalf("chat through make cluster: %s", msg)
	}
	t.Logf("served dev/%s through Envoy on cluster.sh (cold start %s)", name, r.Header.Get("X-Thaw-Cold-Start"))

	// Warm requests go from Envoy straight to the Nomad allocation: the
	// deployment's cluster counts them on its priority-0 host, the
	// activators (priority 1 and the activator cluster) see none.
	cluster := "deploy-" + created.ID
	var instance string
	waitFor(10*time.Second, 50*time.Millisecond, func() bool {
		hosts, _ := envoyHosts(envoyAdmin, cluster, "priority")
		for h, prio := range hosts {
			if prio == "0" {
				instance = h
			}
		}
		return instance != ""
	})
	if instance == "" {
		t.Fatalf("envoy never got a ready instance in %s", cluster)
	}
	count := func() (direct, activators int) {
		rq, _ := envoyHosts(envoyAdmin, cluster, "rq_total")
		for h, v := range rq {
			n, _ := strconv.Atoi(v)
			if h == instance {
				direct += n
			} else {
				activators += n
			}
		}
		stats, _ := httpBody(envoyAdmin + "/stats?filter=^cluster.thaw-activator.upstream_rq_total$")
		if f := strings.Fields(strings.TrimSpace(stats)); len(f) == 2 {
			n, _ := strconv.Atoi(f[1])
			activators += n
		}
		return
	}
	d0, a0 := count()
	for i := 0; i < 5; i++ {
		r, err := s.doAs(token, "POST", "/v1/chat/completions", map[string]any{
			"model": "dev/" + name, "max_tokens": 2, "messages": []map[string]string{{"role": "user", "content": "hi"}},
		})
		if msg := checkChat(r, err); msg != "" {
			t.Fatalf("warm chat through envoy: %s", msg)
		}
	}
	if d1, a1 := count(); d1-d0 != 5 || a1 != a0 {
		t.Errorf("5 warm requests: %d went straight to the instance, %d through activators; want 5 and 0", d1-d0, a1-a0)
	}

	// The official OpenAI Python SDK through Envoy: a second, cold
	// deployment (chat, streaming, completions, models, a 404).
	if py, err := e2e.PythonSDK(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("OpenAI Python SDK missing: %v", err)
		}
		t.Logf("skipping the Python SDK part: %v", err)
	} else {
		pyName := uniqueName("pysdk")
		if r, err := s.doAs(token, "POST", "/deploy/llm", map[string]any{
			"model_name": pyName, "gpu": "H100-80GB", "num_gpus": 1, "max_batch_size": 8,
			"hf": map[string]any{"repo": "org/model"}, "settings": map[string]any{"min_instances": 0, "max_instances": 1},
		}); err != nil || r.Status != 200 {
			t.Fatalf("create: %v %s", err, r)
		}
		out, err := exec.Command(py, filepath.Join(root, "test", "testdata", "openai_sdk_check.py"), m[1]+"/v1/openai", token, "dev/"+pyName).CombinedOutput()
		if err != nil || !strings.Contains(string(out), `"status": 404`) || !strings.Contains(string(out), `"completion_tokens": 4`) {
			t.Errorf("OpenAI Python SDK through Envoy: %v\n%s", err, out)
		}
	}
	// Envoy accepted every configuration thaw sent.
	if stats, err := httpBody(envoyAdmin + "/stats?filter=update_rejected"); err != nil {
		t.Errorf("envoy admin: %v", err)
	} else {
		for _, line := range strings.Split(stats, "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[1] != "0" {
				t.Errorf("envoy rejected a configuration: %s", line)
			}
		}
	}

	if err := c.Shutdown(); err != nil {
		t.Error(err)
	}
	for _, marker := range []string{"--model dev/" + name, "--redis-addr 127.0.0.1:" + redisPort, fmt.Sprintf("http = %d", base)} {
		if pids := procsMatching(marker); len(pids) > 0 {
			t.Errorf("processes left after cluster.sh stopped (%q): %v", marker, pids)
		}
	}
	if pids := procsMatching(fmt.Sprintf("--port %s", redisPort)); len(pids) > 0 {
		t.Errorf("redis left running: %v", pids)
	}
}

// doAs sends one request with token.
func (s *server) doAs(token, method, path string, body any) (response, error) {
	saved := devTokenOverride
	devTokenOverride = token
	defer func() { devTokenOverride = saved }()
	return s.do(method, path, body)
}

// procsMatching returns the PIDs whose command line contains s.
func procsMatching(s string) []int {
	return e2e.ProcsWhere(func(pid int) bool {
		b, err := os.ReadFile(e2e.ProcFile(pid, "cmdline"))
		return err == nil && len(b) > 0 && strings.Contains(strings.ReplaceAll(string(b), "\x00", " ")+" ", s)
	})
}

// httpBody GETs url and returns its body.
func httpBody(url string) (string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// envoyHosts maps each host of an Envoy cluster to one of its stats, from
// the admin /clusters page.
func envoyHosts(admin, cluster, stat string) (map[string]string, error) {
	return e2e.EnvoyAdmin{URL: admin}.HostStats(context.Background(), cluster, stat)
}
