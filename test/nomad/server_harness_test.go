package nomadtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// devToken is user dev's token in every thaw server started here.
const devToken = "tok-nomad-e2e"

// devTokenOverride, when set, replaces devToken in requests (tests run
// one at a time).
var devTokenOverride string

var httpClient = &http.Client{Timeout: 90 * time.Second}

// startRedis starts bin/redis-server on a free loopback port and returns
// its address.
func startRedis(t *testing.T) string {
	t.Helper()
	addr := freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(filepath.Join(root, "bin", "redis-server"), "--bind", "127.0.0.1", "--port", port,
		"--save", "", "--appendonly", "no", "--dir", t.TempDir())
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if !waitFor(10*time.Second, 50*time.Millisecond, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}) {
		t.Fatalf("redis not listening on %s", addr)
	}
	return addr
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ps, err := freePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", ps[0])
}

// serverOpts are the flags of one thaw server; zero values pick defaults.
type serverOpts struct {
	redisAddr   string        // default a new Redis
	nomadAddr   string        // default the test agent
	dataDir     string        // default a new dir
	idleTimeout time.Duration // default 2m
	adoptGrace  time.Duration // default 10s
}

// server is one running `thaw server --engine sim`.
type server struct {
	t       *testing.T
	base    string
	opts    serverOpts
	cmd     *exec.Cmd
	out     *syncBuffer
	done    chan struct{}
	waitErr error
}

func startServer(t *testing.T, o serverOpts) *server {
	t.Helper()
	needCluster(t)
	if o.redisAddr == "" {
		o.redisAddr = startRedis(t)
	}
	if o.dataDir == "" {
		o.dataDir = t.TempDir()
	}
	if o.nomadAddr == "" {
		o.nomadAddr = nomadURL
	}
	if o.idleTimeout == 0 {
		o.idleTimeout = 2 * time.Minute
	}
	if o.adoptGrace == 0 {
		o.adoptGrace = 10 * time.Second
	}
	h := sha256.Sum256([]byte(devToken))
	users := filepath.Join(o.dataDir, "users")
	if err := os.WriteFile(users, []byte("# user dev\ndev sha256:"+hex.EncodeToString(h[:])+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	args := []string{"server", "--engine", "sim", "--addr", addr, "--metrics-addr", freeAddr(t),
		"--nomad-addr", o.nomadAddr, "--redis-addr", o.redisAddr,
		"--data-dir", o.dataDir, "--users-file", users,
		"--sim-startup", "300ms", "--sim-tokens-per-second", "200",
		"--idle-timeout", o.idleTimeout.String(), "--adopt-grace", o.adoptGrace.String(),
		"--hold-timeout", "60s",
	}
	s := &server{t: t, base: "http://" + addr, opts: o, out: &syncBuffer{}, done: make(chan struct{})}
	s.cmd = exec.Command(thawBin, args...)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start thaw server: %v", err)
	}
	go func() { s.waitErr = s.cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("thaw server output (tail):\n%s", s.out.tail(16<<10))
		}
	})
	ok := waitFor(30*time.Second, 50*time.Millisecond, func() bool {
		select {
		case <-s.done:
			return true
		default:
		}
		code, err := httpGet(context.Background(), s.base+"/healthz")
		return err == nil && code == 200
	})
	select {
	case <-s.done:
		t.Fatalf("thaw server exited: %v\n%s", s.waitErr, s.out.tail(8<<10))
	default:
	}
	if !ok {
		t.Fatalf("thaw server not healthy in 30s:\n%s", s.out.tail(8<<10))
	}
	return s
}

// stop sends SIGTERM and waits for thaw server to exit.
func (s *server) stop() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		s.t.Errorf("thaw server did not exit within 20s of SIGTERM")
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

type response struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r response) String() string { return fmt.Sprintf("HTTP %d %s", r.Status, r.Body) }

func (s *server) do(method, path string, body any) (response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return response{}, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.base+path, rd)
	if err != nil {
		return response{}, err
	}
	tok := devToken
	if devTokenOverride != "" {
		tok = devTokenOverride
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return response{resp.StatusCode, resp.Header, b}, err
}

// deployObject is the part of the deploy object the tests read.
type deployObject struct {
	DeployID  string `json:"deploy_id"`
	FullName  string `json:"full_name"`
	Status    string `json:"status"`
	Instances struct {
		Running int    `json:"running"`
		Pending int    `json:"pending"`
		Desired int    `json:"desired"`
		Reason  string `json:"reason"`
	} `json:"instances"`
}

func (d deployObject) String() string {
	i := d.Instances
	return fmt.Sprintf("status=%s running=%d pending=%d desired=%d reason=%q", d.Status, i.Running, i.Pending, i.Desired, i.Reason)
}

func (s *server) create(name, gpu string, numGPUs, batch, minInst, maxInst int) deployObject {
	s.t.Helper()
	r, err := s.do(http.MethodPost, "/deploy/llm", map[string]any{
		"model_name": name, "gpu": gpu, "num_gpus": numGPUs, "max_batch_size": batch,
		"hf":       map[string]any{"repo": "org/model", "token": "hf_e2e_secret"},
		"settings": map[string]any{"min_instances": minInst, "max_instances": maxInst},
	})
	if err != nil || (r.Status != 200 && r.Status != 201) {
		s.t.Fatalf("create %s: %v %s", name, err, r)
	}
	var d deployObject
	if err := json.Unmarshal(r.Body, &d); err != nil {
		s.t.Fatal(err)
	}
	return d
}

func (s *server) get(id string) deployObject {
	s.t.Helper()
	r, err := s.do(http.MethodGet, "/deploy/"+id, nil)
	if err != nil || r.Status != 200 {
		s.t.Fatalf("get %s: %v %s", id, err, r)
	}
	var d deployObject
	if err := json.Unmarshal(r.Body, &d); err != nil {
		s.t.Fatal(err)
	}
	return d
}

func (s *server) delete(id string) {
	s.t.Helper()
	r, err := s.do(http.MethodDelete, "/deploy/"+id, nil)
	if err != nil || r.Status != 200 {
		s.t.Fatalf("delete %s: %v %s", id, err, r)
	}
}

// waitDeploy polls the deploy object until cond holds.
func (s *server) waitDeploy(id string, timeout time.Duration, what string, cond func(deployObject) bool) deployObject {
	s.t.Helper()
	var last deployObject
	if !waitFor(timeout, 100*time.Millisecond, func() bool { last = s.get(id); return cond(last) }) {
		s.t.Fatalf("deployment %s not %s within %v: %s", id, what, timeout, last)
	}
	return last
}

// chat sends one chat completion and returns its response.
func (s *server) chat(model string, maxTokens int) (response, error) {
	return s.do(http.MethodPost, "/v1/openai/chat/completions", map[string]any{
		"model": model, "max_tokens": maxTokens,
		"messages": []map[string]string{{"role": "user", "content": "hello"}},
	})
}

// checkChat says what is wrong with r as a chat completion, "" if nothing.
func checkChat(r response, err error) string {
	if err != nil {
		return err.Error()
	}
	if r.Status != 200 {
		return r.String()
	}
	var c struct {
		Object  string `json:"object"`
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
	}
	if json.Unmarshal(r.Body, &c) != nil || c.Object != "chat.completion" || len(c.Choices) == 0 || c.Choices[0].Message.Content == "" {
		return "not a chat completion: " + r.String()
	}
	return ""
}

func uniqueName(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// jobOf returns the Nomad job ID of a deployment.
func jobOf(d deployObject) string { return "thaw-" + d.DeployID }
