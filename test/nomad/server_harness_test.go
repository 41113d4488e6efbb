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
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/thawhq/thaw/client"
	"github.com/thawhq/thaw/deploy"
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
	args        []string      // further flags, after the harness's own
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
		Args: append([]string{"server", "--engine", "sim",
			"--nomad-addr", o.nomadAddr, "--redis-addr", o.redisAddr,
			"--data-dir", o.dataDir, "--users-file", users,
			"--sim-startup", "300ms", "--sim-tokens-per-second", "200",
			"--idle-timeout", o.idleTimeout.String(), "--adopt-grace", o.adoptGrace.String(),
			"--hold-timeout", "60s",
		}, o.args...),
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
	req.Header.Set("Authorization", "Bearer "+token())
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return response{resp.StatusCode, resp.Header, b}, err
}

// api returns a deploy API client of s as user dev (or devTokenOverride).
func (s *server) api() *client.Client {
	return &client.Client{BaseURL: s.base, Token: token(), HTTP: httpClient}
}

// token is the token requests are sent with.
func token() string {
	if devTokenOverride != "" {
		return devTokenOverride
	}
	return devToken
}

// describe is the part of a deploy object the tests log.
func describe(d deploy.View) string {
	i := d.Instances
	return fmt.Sprintf("status=%s running=%d pending=%d desired=%d reason=%q", d.Status, i.Running, i.Pending, i.Desired, i.Reason)
}

func (s *server) create(name, gpu string, numGPUs, batch, minInst, maxInst int) deploy.View {
	s.t.Helper()
	d, err := s.api().Create(context.Background(), deploy.CreateRequest{
		ModelName: name, GPU: gpu, NumGPUs: &numGPUs, MaxBatchSize: &batch,
		HF:       &deploy.HF{Repo: "org/model", Token: "hf_e2e_secret"},
		Settings: &deploy.Settings{MinInstances: minInst, MaxInstances: maxInst},
	})
	if err != nil {
		s.t.Fatalf("create %s: %v", name, err)
	}
	return d
}

func (s *server) get(id string) deploy.View {
	s.t.Helper()
	d, err := s.api().Get(context.Background(), id)
	if err != nil {
		s.t.Fatalf("get %s: %v", id, err)
	}
	return d
}

func (s *server) delete(id string) {
	s.t.Helper()
	if err := s.api().Delete(context.Background(), id); err != nil {
		s.t.Fatalf("delete %s: %v", id, err)
	}
}

// waitDeploy polls the deploy object until cond holds.
func (s *server) waitDeploy(id string, timeout time.Duration, what string, cond func(deploy.View) bool) deploy.View {
	s.t.Helper()
	var last deploy.View
	if !waitFor(timeout, 100*time.Millisecond, func() bool { last = s.get(id); return cond(last) }) {
		s.t.Fatalf("deployment %s not %s within %v: %s", id, what, timeout, describe(last))
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

// chats sends n chat completions at once, in the background; wait blocks
// until all are answered and returns what was wrong with each that failed
// (checkChat).
func (s *server) chats(model string, n, maxTokens int) (wait func() []string) {
	var wg sync.WaitGroup
	errs := make(chan string, n)
	for range n {
		wg.Go(func() {
			if msg := checkChat(s.chat(model, maxTokens)); msg != "" {
				errs <- msg
			}
		})
	}
	return func() []string {
		wg.Wait()
		close(errs)
		var out []string
		for msg := range errs {
			out = append(out, msg)
		}
		return out
	}
}

// checkChat says what is wrong with r as a chat completion, "" if nothing.
func checkChat(r response, err error) string {
	if err != nil {
		return err.Error()
	}
	return e2e.CheckChat(r.Status, r.Body, 0)
}

func uniqueName(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// jobOf returns the Nomad job ID of a deployment.
func jobOf(d deploy.View) string { return "thaw-" + d.ID }
