package nomadtest

import (
	"context"
	"crypto/tls"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/thawhq/thaw/test/e2e"
)

// TestServerNomadTLS: thaw server reaches a Nomad agent that serves only
// mutual TLS (HTTP and RPC, verify_server_hostname, verify_https_client)
// through Nomad's own environment (NOMAD_ADDR, NOMAD_CACERT,
// NOMAD_CLIENT_CERT, NOMAD_CLIENT_KEY): it wins the leader's lock, keeps
// deployments in Nomad Variables, and a chat wakes a deployment from zero.
// Without a client certificate Nomad refuses every connection: with its
// deployments in Nomad, thaw server retries for a while then exits, saying
// why; with them in a file, it serves its API, says why in its log once,
// and never leads.
func TestServerNomadTLS(t *testing.T) {
	needCluster(t)
	dir := t.TempDir()
	certs, err := e2e.NewNomadTLS(dir)
	if err != nil {
		t.Fatal(err)
	}
	agent, err := e2e.StartNomad(e2e.NomadConfig{GPUs: h100 + ":1", Dir: dir, TLS: certs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := agent.Stop(); err != nil {
			t.Errorf("TLS agent: %v", err)
		}
	})
	agentRefuses(t, agent.URL, certs)

	t.Run("client certificate", func(t *testing.T) {
		client, err := certs.Client("thaw-server")
		if err != nil {
			t.Fatal(err)
		}
		setEnv(t, certs.Env(agent.URL, &client))
		s := startServer(t, serverOpts{nomadAddr: agent.URL})
		tlsLifecycle(t, s, agent)
	})

	t.Run("no client certificate, store in Nomad", func(t *testing.T) {
		setEnv(t, certs.Env(agent.URL, nil))
		refusedStore(t)
	})

	t.Run("no client certificate, store in a file", func(t *testing.T) {
		setEnv(t, certs.Env(agent.URL, nil))
		s := startServer(t, serverOpts{nomadAddr: agent.URL, args: []string{"--store", "file"}})
		refusedLease(t, s)
	})
}

// agentRefuses checks that the agent answers neither plain HTTP nor HTTPS
// without a client certificate, so what thaw gets through is not the
// agent's leniency.
func agentRefuses(t *testing.T, url string, certs *e2e.NomadTLS) {
	t.Helper()
	if code, _ := httpGet(context.Background(), strings.Replace(url, "https://", "http://", 1)+"/v1/agent/self"); code == http.StatusOK {
		t.Fatal("the TLS agent answers plain HTTP")
	}
	noCert := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: certs.CA.Pool(), MinVersion: tls.VersionTLS12}}}
	resp, err := noCert.Get(url + "/v1/agent/self")
	if err == nil {
		resp.Body.Close()
		t.Fatalf("the TLS agent answers HTTPS without a client certificate: %s", resp.Status)
	}
	t.Logf("HTTPS without a client certificate: %v", err)
}

// setEnv sets the environment thaw server inherits (e2e.CleanEnv passes
// NOMAD_* on), first clearing the other Nomad settings a developer's shell
// may hold.
func setEnv(t *testing.T, env []string) {
	for _, k := range []string{"NOMAD_ADDR", "NOMAD_TOKEN", "NOMAD_CACERT", "NOMAD_CAPATH", "NOMAD_CLIENT_CERT",
		"NOMAD_CLIENT_KEY", "NOMAD_TLS_SERVER_NAME", "NOMAD_SKIP_VERIFY", "NOMAD_NAMESPACE", "NOMAD_REGION"} {
		t.Setenv(k, "")
	}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}

// tlsLifecycle: s leads, holding the lock on the agent; its deployment
// is stored and placed over TLS, a chat wakes it from zero, and it is
// deleted.
func tlsLifecycle(t *testing.T, s *server, agent *e2e.Nomad) {
	var h e2e.Health
	var body string
	if !waitFor(30*time.Second, 100*time.Millisecond, func() bool {
		r, err := s.do(http.MethodGet, "/healthz", nil)
		body = string(r.Body)
		h, _ = e2e.GetHealth(context.Background(), s.base)
		return err == nil && h.Role == e2e.RoleLeader && strings.Contains(body, `"nomad":"ok"`)
	}) {
		t.Fatalf("/healthz: %s, want role leader and nomad ok", body)
	}
	t.Logf("/healthz: %s", body)
	var lock struct{ Items map[string]string }
	if err := agent.GetJSON("/v1/var/thaw/leader", &lock); err != nil || lock.Items["holder"] != h.Leader {
		t.Errorf("the leader's lock on the agent: %+v (%v), want holder %q", lock, err, h.Leader)
	}

	d := s.create(uniqueName("tls"), "H100-80GB", 1, 2, 0, 1)
	var records []struct{ Path string }
	if err := agent.GetJSON("/v1/vars?prefix=thaw/records/", &records); err != nil || len(records) == 0 {
		t.Errorf("the deployment's record on the agent: %+v (%v), want one under thaw/records/", records, err)
	}
	t0 := time.Now()
	if msg := checkChat(s.chat(d.FullName, 5)); msg != "" {
		t.Fatalf("chat to a deployment at zero: %s", msg)
	}
	t.Logf("a chat woke it from zero in %v: %s", time.Since(t0).Round(time.Millisecond), describe(s.get(d.ID)))
	if live, err := agent.LiveAllocs(); err != nil || live != 1 {
		t.Errorf("allocations on the agent: %d (%v), want 1", live, err)
	}
	s.delete(d.ID)
	if !waitFor(30*time.Second, 200*time.Millisecond, func() bool {
		return agent.GetJSON("/v1/job/"+jobOf(d), nil) != nil
	}) {
		t.Errorf("job %s still on the agent 30s after the delete", jobOf(d))
	}
	if out := s.th.Out.String(); strings.Contains(out, "tls:") || strings.Contains(out, "x509") {
		t.Errorf("thaw server's log speaks of TLS trouble:\n%s", e2e.TailLines(out, 20))
	}
}

// refusedStore: thaw server, its deployments in Nomad (the default store),
// which refuses it, retries for 30s (Nomad may be starting), then exits
// with an error that says what Nomad refused, without a panic. It never
// opens its listener in the meantime.
func refusedStore(t *testing.T) {
	dir := t.TempDir()
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(users, []byte("dev sha256:"+strings.Repeat("0", 64)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	// No --nomad-addr: NOMAD_ADDR, as the nomad CLI reads it.
	p, err := e2e.Start(e2e.ProcConfig{Name: "thaw server (no client certificate)", Args: []string{thawBin, "server",
		"--engine", "sim", "--redis-addr", startRedis(t), "--data-dir", dir,
		"--users-file", users, "--addr", addr, "--metrics-addr", freeAddr(t)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop() })
	t0 := time.Now()
	if !waitFor(60*time.Second, 200*time.Millisecond, p.Exited) {
		t.Fatalf("still running 60s after Nomad refused it:\n%s", p.Out.TailLines(10))
	}
	out := p.Out.String()
	t.Logf("exited after %v (%v); the last lines:\n%s", time.Since(t0).Round(time.Millisecond), p.Err(), e2e.TailLines(out, 2))
	last := e2e.TailLines(out, 1)
	if p.Err() == nil || !strings.Contains(last, "tls: certificate required") || strings.Contains(out, "panic") {
		t.Errorf("exit %v, want an error naming the refused handshake; output:\n%s", p.Err(), e2e.TailLines(out, 10))
	}
	if elapsed := time.Since(t0); elapsed < 25*time.Second {
		t.Errorf("gave up after %v, want about 30s of retries", elapsed)
	}
}

// refusedLease: thaw server whose deployments are in a file, which Nomad
// refuses: for longer than the lock's TTL it serves /healthz as a follower
// of no one (no Nomad, no lock), and its log says why, not once per
// retry.
func refusedLease(t *testing.T, s *server) {
	deadline := time.Now().Add(12 * time.Second)
	for time.Now().Before(deadline) {
		h, err := e2e.GetHealth(context.Background(), s.base)
		if err != nil || h.Role != e2e.RoleFollower || h.Leader != "" {
			t.Fatalf("/healthz without a client certificate: %+v (%v), want a follower of no one", h, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	r, err := s.do(http.MethodGet, "/healthz", nil)
	t.Logf("/healthz after 12s without a client certificate: %s %v", r, err)
	out := s.th.Out.String()
	// A campaign every second: the lease logs a failure when its text
	// changes, which Go's HTTP client varies now and then for one refused
	// handshake ("readLoopPeekFailLocked: remote error: ...").
	failed := strings.Count(out, "lease: campaign failed")
	if failed == 0 || failed > 6 || !strings.Contains(out, "tls: certificate required") || strings.Contains(out, "lease: acquired") {
		t.Errorf("thaw server's log: %d campaign failures, want a few naming the refused handshake, and no lock:\n%s", failed, e2e.TailLines(out, 20))
	}
	if s.th.Exited() {
		t.Errorf("thaw server exited: %v", s.th.Err())
	}
}
