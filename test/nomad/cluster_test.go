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
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/thawhq/thaw/test/e2e"
)

// TestClusterScript runs scripts/cluster.sh (`make cluster`) on its own
// ports: it prints user dev's generated token, serves a deployment through
// its Nomad agent, survives its leader's SIGKILL (replicaFailover), and on
// SIGTERM (the same trap as Ctrl-C) stops everything, leaving no process
// behind.
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
	waitVisible(t, c, token, created.ID)
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
		r, err := s.doAs(token, "POST", "/deploy/llm", map[string]any{
			"model_name": pyName, "gpu": "H100-80GB", "num_gpus": 1, "max_batch_size": 8,
			"hf": map[string]any{"repo": "org/model"}, "settings": map[string]any{"min_instances": 0, "max_instances": 1},
		})
		if err != nil || r.Status != 200 {
			t.Fatalf("create: %v %s", err, r)
		}
		var pyDeploy struct {
			ID string `json:"deploy_id"`
		}
		_ = json.Unmarshal(r.Body, &pyDeploy)
		waitVisible(t, c, token, pyDeploy.ID)
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

	replicaFailover(t, c, s, token, name)

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

// visibleBound is how long a deployment created on one replica may take to
// show on every replica (issue 14: within a second).
const visibleBound = time.Second

// waitVisible waits until every replica of c answers GET /deploy/{id}, and
// fails t when that takes longer than visibleBound: the edge sends the next
// request to either replica.
func waitVisible(t *testing.T, c *e2e.Cluster, token, id string) {
	t.Helper()
	start := time.Now()
	for _, rep := range c.Replicas {
		rs := &server{t: t, base: rep.API}
		waitFor(10*time.Second, 20*time.Millisecond, func() bool {
			r, err := rs.doAs(token, "GET", "/deploy/"+id, nil)
			return err == nil && r.Status == 200
		})
	}
	if took := time.Since(start); took > visibleBound {
		t.Errorf("deployment %s took %s to show on every replica, want at most %s", id, took, visibleBound)
	}
}

// failoverBound is how long the surviving replica may take to lead after
// the leader's SIGKILL: Nomad frees the lock 2 x TTL (10 s) after the last
// renewal, plus the lock delay, and the follower campaigns every second.
const failoverBound = 30 * time.Second

// replicaFailover: make cluster's two replicas agree that one leads and the
// other follows it. SIGKILL of the leader is reported by the script, which
// goes on; the edge answers the deploy API throughout (Envoy retries on the
// other replica and ejects the dead one); the survivor leads within
// failoverBound and still serves the deployment name through the edge; and
// the killed replica, restarted with its own command line, rejoins as a
// follower.
func replicaFailover(t *testing.T, c *e2e.Cluster, s *server, token, name string) {
	if len(c.Replicas) != 2 {
		t.Fatalf("cluster.sh announced %d replicas, want 2: %+v", len(c.Replicas), c.Replicas)
	}
	// agreed reads both replicas' /healthz into roles and says whether one
	// leads (replica index lead; either when lead < 0) and the other
	// follows it.
	var roles [2]map[string]string
	leads := func(h map[string]string) bool { return h["role"] == "leader" }
	agreed := func(lead int) bool {
		for i, r := range c.Replicas {
			if roles[i] = replicaHealth(r.API); roles[i] == nil {
				return false
			}
		}
		l := slices.IndexFunc(roles[:], leads)
		return l >= 0 && (lead < 0 || l == lead) && roles[1-l]["role"] == "follower" &&
			roles[l]["leader"] != "" && roles[1-l]["leader"] == roles[l]["leader"]
	}
	if !waitFor(15*time.Second, 100*time.Millisecond, func() bool { return agreed(-1) }) {
		t.Fatalf("replicas' /healthz: %v; want one leader and one follower of it", roles)
	}
	leader := slices.IndexFunc(roles[:], leads)
	dead, survivor := c.Replicas[leader], 1-leader
	t.Logf("replica %d leads (%s); SIGKILL", dead.N, roles[leader]["leader"])
	if err := syscall.Kill(dead.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	failed := 0
	for time.Since(killed) < 3*time.Second {
		if r, err := s.doAs(token, "GET", "/deploy/list", nil); err != nil || r.Status != 200 {
			failed++
			t.Logf("GET /deploy/list through the edge %s after the kill: %v %v", time.Since(killed), err, r)
		}
	}
	if failed > 0 {
		t.Errorf("%d GET /deploy/list through the edge failed after a replica's SIGKILL, want 0", failed)
	}
	goesOn := fmt.Sprintf("cluster: replica %d (pid %d) exited with status 137; the cluster goes on", dead.N, dead.PID)
	if !waitFor(5*time.Second, 50*time.Millisecond, func() bool { return strings.Contains(c.Out.Tail(64<<10), goesOn) }) || c.Exited() {
		t.Fatalf("cluster.sh did not say %q and go on (exited: %v)", goesOn, c.Exited())
	}
	if !waitFor(failoverBound, 100*time.Millisecond, func() bool {
		return leads(replicaHealth(c.Replicas[survivor].API))
	}) {
		t.Fatalf("replica %d not leading %s after the leader's SIGKILL", survivor+1, failoverBound)
	}
	t.Logf("replica %d leads %s after the leader's SIGKILL", survivor+1, time.Since(killed).Round(100*time.Millisecond))
	r, err := s.doAs(token, "POST", "/v1/chat/completions", map[string]any{
		"model": "dev/" + name, "max_tokens": 2, "messages": []map[string]string{{"role": "user", "content": "hi"}},
	})
	if msg := checkChat(r, err); msg != "" {
		t.Errorf("chat through the edge after the failover: %s", msg)
	}

	if _, err := c.RestartReplica(dead.N); err != nil {
		t.Fatalf("restart replica %d: %v", dead.N, err)
	}
	if !waitFor(15*time.Second, 100*time.Millisecond, func() bool { return agreed(survivor) }) {
		t.Errorf("after replica %d restarted: /healthz %v; want replica %d to lead and the other to follow it", dead.N, roles, survivor+1)
	}
}

// replicaHealth is a replica's GET /healthz JSON, nil on an error.
func replicaHealth(api string) map[string]string {
	body, err := httpBody(api + "/healthz")
	var h map[string]string
	if err != nil || json.Unmarshal([]byte(body), &h) != nil {
		return nil
	}
	return h
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
