package envoy_test

import (
	"github.com/thawhq/thaw/test/e2e"

	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// topology is the production request path on loopback: Envoy configured by
// thaw dev's xDS server, two `thaw activator` replicas, a real Redis, and
// the simulators thaw dev starts, which log every request they receive.
type topology struct {
	edge       *edge
	api        string   // thaw dev, http://host:port
	metrics    []string // operators' listeners: thaw dev, activator 1, 2
	activators []string
	actProcs   []*e2e.Thaw
	redis      *redis.Client
	reqLog     string // the simulators' request log
}

// topoOpts are thaw dev's settings in a topology.
type topoOpts struct {
	idle            time.Duration // --idle-timeout; default 2m
	simStartup      string        // --sim-startup; default 1500ms
	tokensPerSecond string        // --sim-tokens-per-second; default 20
}

func startTopology(t *testing.T, ctx context.Context, o topoOpts) *topology {
	t.Helper()
	if o.idle == 0 {
		o.idle = 2 * time.Minute
	}
	if o.simStartup == "" {
		o.simStartup = "1500ms"
	}
	if o.tokensPerSecond == "" {
		o.tokensPerSecond = "20"
	}
	envoyBin(t)
	thaw := thawBinary(t)
	dir := t.TempDir()
	rdb := e2e.RedisT(t, e2e.RedisConfig{})
	xdsAddr, edgeAddr, admin := freeAddr(t), freeAddr(t), freeAddr(t)
	a1, a2 := freeAddr(t), freeAddr(t)
	data := filepath.Join(dir, "data")
	top := &topology{
		redis: redis.NewClient(&redis.Options{Addr: rdb}), reqLog: filepath.Join(dir, "requests.jsonl"),
	}
	t.Cleanup(func() { top.redis.Close() })
	dev := e2e.StartThawT(t, e2e.ThawConfig{Bin: thaw, Env: []string{"THAW_DEV_TOKEN=tok-dev"}, Args: []string{"dev",
		"--data-dir", data, "--redis-addr", rdb,
		"--xds-addr", xdsAddr, "--edge-addr", edgeAddr, "--envoy-admin", "http://" + admin,
		"--activators", a1 + "," + a2, "--idle-timeout", o.idle.String(),
		"--sim-startup", o.simStartup, "--sim-tokens-per-second", o.tokensPerSecond, "--sim-request-log", top.reqLog}})
	top.api = dev.Base
	top.metrics = append(top.metrics, strings.TrimPrefix(dev.Metrics, "http://"))
	waitUsersFile(t, data)
	for i, a := range []string{a1, a2} {
		act := e2e.StartThawT(t, e2e.ThawConfig{Bin: thaw, Name: "activator" + strconv.Itoa(i+1), Addr: a, Args: []string{"activator",
			"--redis-addr", rdb, "--users-file", filepath.Join(data, "users")}})
		top.actProcs = append(top.actProcs, act)
		top.activators = append(top.activators, a)
		top.metrics = append(top.metrics, strings.TrimPrefix(act.Metrics, "http://"))
	}
	top.edge = startEnvoy(ctx, t, thaw, xdsAddr, edgeAddr, admin)
	return top
}

// gauges sums the thaw_requests_held and thaw_requests_inflight series of
// deployID over thaw dev and both activators.
func (top *topology) gauges(t *testing.T, deployID string) (held, inflight int) {
	t.Helper()
	of := map[string]string{"deploy_id": deployID}
	for _, addr := range top.metrics {
		m, err := e2e.ScrapeMetrics(context.Background(), "http://"+addr+"/metrics")
		if err != nil {
			t.Fatalf("metrics at %s: %v", addr, err)
		}
		h, _ := m.Sum("thaw_requests_held", of)
		f, _ := m.Sum("thaw_requests_inflight", of)
		held, inflight = held+int(h), inflight+int(f)
	}
	return held, inflight
}

// redisInflight sums the in-flight counts activator replicas report to
// Redis (thaw:inflight:<replica>, instance -> requests), which the control
// plane waits on before it stops a draining instance.
func (top *topology) redisInflight(t *testing.T) int {
	t.Helper()
	ctx := context.Background()
	keys, err := top.redis.Keys(ctx, "thaw:inflight:*").Result()
	if err != nil {
		t.Fatalf("redis: %v", err)
	}
	n := 0
	for _, k := range keys {
		vals, err := top.redis.HGetAll(ctx, k).Result()
		if err != nil {
			t.Fatalf("redis: %v", err)
		}
		for _, v := range vals {
			c, _ := strconv.Atoi(v)
			n += c
		}
	}
	return n
}

// record is a line of the simulators' request log (sim.RequestRecord).
type record struct {
	Path    string      `json:"path"`
	Header  http.Header `json:"header"`
	Aborted bool        `json:"aborted"`
}

func (top *topology) records(t *testing.T) []record {
	t.Helper()
	b, err := os.ReadFile(top.reqLog)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []record
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line == "" {
			continue
		}
		var r record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("request log line %q: %v", line, err)
		}
		out = append(out, r)
	}
	return out
}

// caseHeader names the test case of a request, so the request log tells
// which one a model server saw.
const caseHeader = "X-Test-Case"

func streamBody(model string) string {
	return `{"model":"` + model + `","stream":true,"max_tokens":200,"messages":[{"role":"user","content":"hi"}]}`
}

// leaveAfterFirstChunk sends a streaming request through the edge and,
// once the first SSE chunk arrived, leaves the way leave says.
func (top *topology) leaveAfterFirstChunk(t *testing.T, name, path, body string, leave func(net.Conn)) {
	t.Helper()
	u := strings.TrimPrefix(top.edge.url, "http://")
	c, err := net.Dial("tcp", u)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer tok-dev\r\nContent-Type: application/json\r\n%s: %s\r\nContent-Length: %d\r\n\r\n%s",
		path, u, caseHeader, name, len(body), body)
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s: %d %s", name, resp.StatusCode, b)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "data: ") {
		t.Fatalf("%s: first chunk %q, %v", name, line, err)
	}
	leave(c)
}

// reset closes the connection with a TCP RST (SO_LINGER 0).
func reset(c net.Conn) {
	_ = c.(*net.TCPConn).SetLinger(0)
	_ = c.Close()
}

// cancelAfter sends body to path through the edge with a Go client whose
// context ends after d.
func (top *topology) cancelAfter(t *testing.T, name, path, body string, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, top.edge.url+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer tok-dev")
	req.Header.Set(caseHeader, name)
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Fatalf("%s: the request ended before the client left; make it longer", name)
	}
}

// TestClientsLeaveThroughEnvoy: clients that leave in every way, through
// Envoy's direct route, the activator route and the activator replicas,
// give their slots back at once: held, in flight (at thaw and in Redis) are
// zero, the model server saw each request cancelled, a burst larger than
// the batch is served, no model server saw a caller's token or a routing
// header, and the idle deployment scales to zero on time.
func TestClientsLeaveThroughEnvoy(t *testing.T) {
	t.Parallel()
	const idle = 4 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	top := startTopology(t, ctx, topoOpts{idle: idle})
	e := top.edge
	id := e.createDeployment(t, "leave", 2, 0, 1)
	chatLong := `{"model":"dev/leave","max_tokens":200,"messages":[{"role":"user","content":"hi"}]}`

	// Held: the deployment is cold, the activators hold these; curl gives
	// up after 1s, a Go client after 500ms.
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatalf("curl not found (make deps installs it): %v", err)
	}
	out, err := exec.Command(curl, "-sS", "-m", "1", "-o", "/dev/null", "-w", "%{http_code}", e.url+"/v1/openai/chat/completions",
		"-H", "Authorization: Bearer tok-dev", "-H", caseHeader+": curl-held", "-d", chatLong).CombinedOutput()
	if err == nil {
		t.Fatalf("curl -m 1 on a cold deployment finished: %s", out)
	}
	top.cancelAfter(t, "go-held", "/v1/openai/chat/completions", chatLong, 500*time.Millisecond)

	// Warm: wait until Envoy routes straight to the instance.
	e.waitFor(ctx, t, "instance in envoy", func() bool { return e.instanceHost(t, "deploy-"+id, "") != "" })
	stream := streamBody("dev/leave")
	top.leaveAfterFirstChunk(t, "rst-direct", "/v1/openai/chat/completions", stream, reset)
	top.leaveAfterFirstChunk(t, "close-direct", "/v1/chat/completions", stream, func(c net.Conn) { c.Close() })
	top.leaveAfterFirstChunk(t, "rst-activator", "/v1/openai/chat/completions", streamBody("deploy_id:"+id), reset)
	top.cancelAfter(t, "go-completions", "/v1/openai/completions", `{"model":"dev/leave","prompt":"hi","max_tokens":200,"stream":true}`, time.Second)
	top.cancelAfter(t, "go-native", "/v1/inference/dev/leave", `{"input":"hi","max_new_tokens":200}`, time.Second)
	out, err = exec.Command(curl, "-sS", "-N", "-m", "1", "-o", "/dev/null", e.url+"/v1/openai/chat/completions",
		"-H", "Authorization: Bearer tok-dev", "-H", caseHeader+": curl-stream", "-d", stream).CombinedOutput()
	if err == nil {
		t.Fatalf("curl -m 1 on a 10s stream finished: %s", out)
	}
	python := pythonSDK(t)
	script := `
import openai, sys
c = openai.OpenAI(base_url=sys.argv[1] + "/v1/openai", api_key="tok-dev", default_headers={"X-Test-Case": "python-break"})
s = c.chat.completions.create(model="dev/leave", stream=True, max_tokens=200, messages=[{"role": "user", "content": "hi"}])
for i, chunk in enumerate(s):
    if i == 2:
        break
s.close()
c.close()
`
	if out, err := exec.Command(python, "-c", script, e.url).CombinedOutput(); err != nil {
		t.Fatalf("python SDK: %v\n%s", err, out)
	}

	// Every slot is back at once.
	var held, inflight, inRedis int
	ok := waitUntil(3*time.Second, func() bool {
		held, inflight = top.gauges(t, id)
		inRedis = top.redisInflight(t)
		return held == 0 && inflight == 0 && inRedis == 0
	})
	if !ok {
		t.Errorf("after every client left: held %d, in flight %d (thaw and activators), in flight in Redis %d; want 0", held, inflight, inRedis)
	}
	// The model server saw each request that reached it cancelled.
	ok = waitUntil(3*time.Second, func() bool {
		for _, name := range []string{"rst-direct", "close-direct", "rst-activator", "go-completions", "go-native", "curl-stream", "python-break"} {
			if !top.sawAborted(t, name) {
				return false
			}
		}
		return true
	})
	if !ok {
		for _, name := range []string{"rst-direct", "close-direct", "rst-activator", "go-completions", "go-native", "curl-stream", "python-break"} {
			if !top.sawAborted(t, name) {
				var seen []string
				for _, r := range top.records(t) {
					if r.Header.Get(caseHeader) == name {
						seen = append(seen, fmt.Sprintf("%s aborted=%v", r.Path, r.Aborted))
					}
				}
				t.Errorf("%s: the model server did not see the request cancelled; it saw %q", name, seen)
			}
		}
	}

	// No slot leaked: more requests than the batch, at once, all served.
	var wg sync.WaitGroup
	statuses := make([]int, 5)
	for i := range statuses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i] = e.post(t, "/v1/openai/chat/completions", "tok-dev", chat("dev/leave")).status
		}()
	}
	wg.Wait()
	for i, s := range statuses {
		if s != http.StatusOK {
			t.Errorf("request %d of a burst after the clients left: %d", i, s)
		}
	}

	// No model server saw a caller's token or thaw's routing headers.
	recs := top.records(t)
	if len(recs) < 10 {
		t.Errorf("the request log has %d requests, want at least 10", len(recs))
	}
	for _, rec := range recs {
		for _, h := range []string{"Authorization", "X-Thaw-Deploy-Id", "X-Thaw-Route", "X-Thaw-Hold-Timeout"} {
			if v := rec.Header.Get(h); v != "" {
				t.Errorf("a model server received %s: %q (case %q, %s)", h, v, rec.Header.Get(caseHeader), rec.Path)
			}
		}
	}

	// Idle, it scales to zero on time (a leaked slot kept it up forever).
	start := time.Now()
	var running int
	ok = waitUntil(idle+20*time.Second, func() bool {
		resp, err := http.NewRequest(http.MethodGet, top.api+"/deploy/"+id, nil)
		if err != nil {
			return false
		}
		resp.Header.Set("Authorization", "Bearer tok-dev")
		res, err := http.DefaultClient.Do(resp)
		if err != nil {
			return false
		}
		defer res.Body.Close()
		var got struct {
			Instances struct{ Running int } `json:"instances"`
		}
		_ = json.NewDecoder(res.Body).Decode(&got)
		running = got.Instances.Running
		return running == 0
	})
	if !ok {
		t.Errorf("still %d instances running %s after the last request (idle timeout %s)", running, time.Since(start).Round(time.Second), idle)
	}
	checkNoEnvoyReject(t, e)
}

// sawAborted reports whether the request log has a cancelled request of
// case name.
func (top *topology) sawAborted(t *testing.T, name string) bool {
	for _, r := range top.records(t) {
		if r.Header.Get(caseHeader) == name && r.Aborted {
			return true
		}
	}
	return false
}

func waitUntil(d time.Duration, cond func() bool) bool {
	return e2e.Eventually(d, 50*time.Millisecond, cond)
}

// pythonSDK is the project's Python with the official OpenAI SDK
// (.venv-py, made by make deps).
func pythonSDK(t *testing.T) string {
	t.Helper()
	py, err := e2e.PythonSDK()
	if err != nil {
		t.Fatalf("the OpenAI Python SDK is not installed: %v", err)
	}
	return py
}
