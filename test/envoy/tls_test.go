package envoy_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/thawhq/thaw/internal/certtest"
	"github.com/thawhq/thaw/internal/xdstest"
	"github.com/thawhq/thaw/routing"
	"github.com/thawhq/thaw/test/e2e"
)

// TestTLSEverywhere runs thaw's request path with TLS on every hop it
// owns, with certificates the test makes. Redis serves TLS only and
// requires a password: thaw dev reaches it by host:port with --redis-ca and
// THAW_REDIS_PASSWORD, a thaw activator replica by a rediss:// URL. thaw
// serves ADS over mutual TLS, and Envoy, bootstrapped by `thaw
// envoy-bootstrap --xds-ca --xds-client-cert --xds-client-key`, takes its
// configuration over it and serves its listener with the edge
// certificate. A cold chat over HTTPS (HTTP/2 by ALPN, trusting the test
// CA) is held by the replica and served; the same request in cleartext
// HTTP gets no answer; a client that does not trust the CA refuses the
// edge; an xDS client without a client certificate is refused.
func TestTLSEverywhere(t *testing.T) {
	ctx, thaw := devTest(t)
	dir := t.TempDir()
	ca := certtest.NewCAT(t, "thaw e2e CA")
	redisCert := ca.WriteT(t, dir, "redis", "127.0.0.1")
	xdsCert := ca.WriteT(t, dir, "xds", "127.0.0.1")
	envoyCert := ca.WriteT(t, dir, "envoy")
	edgeCert := ca.WriteT(t, dir, "edge", "127.0.0.1", "localhost")
	const password = "e2e-s3cret"
	rdb := e2e.RedisT(t, e2e.RedisConfig{Password: password, TLS: e2e.RedisTLS{
		CertFile: redisCert.Cert, KeyFile: redisCert.Key, CAFile: redisCert.CA,
	}})
	xdsAddr, edgeAddr, admin, act := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	data := filepath.Join(dir, "data")

	dev := e2e.StartThawT(t, e2e.ThawConfig{Bin: thaw, Env: []string{"THAW_DEV_TOKEN=tok-dev", "THAW_REDIS_PASSWORD=" + password}, Args: []string{"dev",
		"--data-dir", data, "--redis-addr", rdb, "--redis-ca", redisCert.CA,
		"--xds-addr", xdsAddr, "--xds-tls-cert", xdsCert.Cert, "--xds-tls-key", xdsCert.Key, "--xds-client-ca", xdsCert.CA,
		"--edge-addr", edgeAddr, "--edge-tls-cert", edgeCert.Cert, "--edge-tls-key", edgeCert.Key,
		"--envoy-admin", "http://" + admin, "--activators", act,
		"--sim-startup", "300ms", "--sim-tokens-per-second", "500"}})
	if strings.Contains(dev.Out.String(), password) {
		t.Error("thaw dev printed the Redis password")
	}
	waitUsersFile(t, data)
	replica := e2e.StartThawT(t, e2e.ThawConfig{Bin: thaw, Name: "activator", Addr: act, Args: []string{"activator",
		"--redis-addr", "rediss://:" + password + "@" + rdb, "--redis-ca", redisCert.CA,
		"--users-file", filepath.Join(data, "users")}})
	if out := replica.Out.String(); strings.Contains(out, password) || !strings.Contains(out, "rediss://:xxxxx@"+rdb) {
		t.Errorf("the activator's banner should show the Redis URL without its password:\n%s", out)
	}

	boot, err := exec.Command(thaw, "envoy-bootstrap", "--xds-addr", xdsAddr, "--admin", admin,
		"--xds-ca", xdsCert.CA, "--xds-client-cert", envoyCert.Cert, "--xds-client-key", envoyCert.Key).Output()
	if err != nil {
		t.Fatalf("thaw envoy-bootstrap: %v", err)
	}
	e2e.StartEnvoyT(t, e2e.EnvoyConfig{Bin: envoyBin(t), Bootstrap: boot, Admin: admin, Dir: t.TempDir()})
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	e := &edge{url: "https://" + edgeAddr, admin: "http://" + admin, client: &http.Client{Transport: tr, Timeout: time.Minute}}
	e.waitHealthy(ctx, t)

	e.createDeployment(t, "m1", 4, 0, 1)
	checkHTTPSChat(t, e)
	if n := e.stat(t, "cluster.thaw-activator.upstream_rq_total"); n < 1 {
		t.Errorf("the cold request did not go through the activator replica (cluster.thaw-activator.upstream_rq_total = %d)", n)
	}
	checkPlainRefused(t, edgeAddr)
	checkXDSNeedsClientCert(t, xdsAddr, ca)
	checkNoEnvoyReject(t, e)
}

// checkHTTPSChat: a cold chat over HTTPS is served, over HTTP/2.
func checkHTTPSChat(t *testing.T, e *edge) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.url+"/v1/openai/chat/completions", strings.NewReader(chat("dev/m1")))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer tok-dev")
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatalf("chat over HTTPS: %v", err)
	}
	defer resp.Body.Close()
	var body struct {
		Choices []struct{ Message struct{ Content string } }
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK || len(body.Choices) == 0 {
		t.Fatalf("chat over HTTPS: %s (%v) %+v", resp.Status, err, body)
	}
	if resp.Header.Get(routing.ColdStartHeader) == "" {
		t.Errorf("the first chat has no %s header: it was not a cold start", routing.ColdStartHeader)
	}
	if resp.ProtoMajor != 2 {
		t.Errorf("protocol %s, want HTTP/2 (ALPN h2)", resp.Proto)
	}
}

// checkPlainRefused: cleartext HTTP to the TLS listener gets no HTTP
// answer, and a client that does not trust the test CA refuses the edge.
func checkPlainRefused(t *testing.T, edgeAddr string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Post("http://"+edgeAddr+"/v1/openai/chat/completions", "application/json", strings.NewReader(chat("dev/m1")))
	if err == nil {
		resp.Body.Close()
		t.Errorf("cleartext HTTP to the TLS listener answered %s", resp.Status)
	}
	resp, err = c.Get("https://" + edgeAddr + "/healthz")
	if err == nil {
		resp.Body.Close()
		t.Errorf("a client without the test CA trusted the edge (%s)", resp.Status)
	} else if !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a client without the test CA: %v, want a certificate error", err)
	}
}

// checkXDSNeedsClientCert: an xDS client that trusts the server but has no
// client certificate gets no configuration.
func checkXDSNeedsClientCert(t *testing.T, xdsAddr string, ca *certtest.CA) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := xdstest.FetchListeners(ctx, xdsAddr, credentials.NewTLS(&tls.Config{RootCAs: ca.Pool()}), "intruder")
	if err == nil {
		t.Fatal("an xDS client without a client certificate got the edge's listeners")
	}
	if !strings.Contains(err.Error(), "certificate required") && !strings.Contains(err.Error(), "Unavailable") {
		t.Errorf("xDS client without a certificate: %v, want a TLS refusal", err)
	}
}
