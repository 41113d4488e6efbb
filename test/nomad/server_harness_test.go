package nomadtest

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/thawhq/thaw/test/e2e"
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
	return e2e.RedisT(t, e2e.RedisConfig{Bin: filepath.Join(root, "bin", "redis-server")})
}

func freeAddr(t *testing.T) string { return e2e.FreeAddrT(t) }

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
	t    *testing.T
	base string
	opts serverOpts
	th   *e2e.Thaw
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
	th, err := e2e.StartThaw(e2e.ThawConfig{
		Bin: thawBin,
		Args: []string{"server", "--engine", "sim",
			"--nomad-addr", o.nomadAddr, "--redis-addr", o.redisAddr,
			"--data-dir", o.dataDir, "--users-file", users,
			"--sim-startup", "300ms", "--sim-tokens-per-second", "200",
			"--idle-timeout", o.idleTimeout.String(), "--adopt-grace", o.adoptGrace.String(),
			"--hold-timeout", "60s",
		},
		Proc: e2e.ProcConfig{StopTimeout: 20 * time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, base: th.Base, opts: o, th: th}
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("thaw server output (tail):\n%s", th.Out.Tail(16<<10))
		}
	})
	return s
}

// stop sends SIGTERM and waits for thaw server to exit.
func (s *server) stop() {
	if s.th.Exited() {
		return
	}
	if !s.th.Stop() {
		s.t.Errorf("thaw server did not exit within 20s of SIGTERM")
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
