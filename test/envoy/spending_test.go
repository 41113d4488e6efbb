package envoy_test

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/thawhq/thaw/test/e2e"
)

// TestActivatorReplicaRefusesOverLimit: thaw dev (1 USD per GPU-second,
// spend checked every 500ms) behind Envoy with one `thaw activator`
// replica. A user with a 3 USD limit runs a 1-GPU deployment until
// blocked; once it is at zero, a request sent straight to the replica gets
// OpenAI's 429 insufficient_quota at once, as through Envoy, instead of
// being held until the replica's hold timeout (503). Raising the limit lets
// the next request through the replica be served.
func TestActivatorReplicaRefusesOverLimit(t *testing.T) {
	ctx, thaw := devTest(t)
	rdb := e2e.RedisT(t, e2e.RedisConfig{})
	xdsAddr, edgeAddr, admin, act := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	data := filepath.Join(t.TempDir(), "data")
	dev := e2e.StartThawT(t, e2e.ThawConfig{Bin: thaw, Env: []string{"THAW_DEV_TOKEN=tok-dev"}, Args: []string{"dev",
		"--data-dir", data, "--redis-addr", rdb,
		"--xds-addr", xdsAddr, "--edge-addr", edgeAddr, "--envoy-admin", "http://" + admin, "--activators", act,
		"--gpu-prices=A100-80GB=3600", "--spending-check-interval=500ms",
		"--sim-startup", "300ms", "--sim-tokens-per-second", "500"}})
	waitUsersFile(t, data)
	// A short hold timeout: without the refusal the replica answers 503
	// after 5s, not after the default 10 minutes.
	e2e.StartThawT(t, e2e.ThawConfig{Bin: thaw, Name: "activator", Addr: act, Args: []string{"activator",
		"--redis-addr", rdb, "--users-file", filepath.Join(data, "users"), "--hold-timeout", "5s"}})
	e := startEnvoy(ctx, t, thaw, xdsAddr, edgeAddr, admin)
	replica := &edge{url: "http://" + act, client: &http.Client{Timeout: time.Minute}}

	if r := do(t, http.MethodPut, dev.Base+"/account", `{"spending_limit_usd": 3}`); r.status != http.StatusOK {
		t.Fatalf("PUT /account: %d %s", r.status, r.body)
	}
	id := e.createDeployment(t, "capped", 4, 1, 1)

	// 3 USD at 1 USD a second: blocked about 3s after the GPU was taken,
	// then drained to zero.
	e.waitFor(ctx, t, "the user blocked", func() bool {
		var acct struct {
			Blocked bool `json:"blocked"`
		}
		r := do(t, http.MethodGet, dev.Base+"/account", "")
		return json.Unmarshal([]byte(r.body), &acct) == nil && acct.Blocked
	})
	e.waitFor(ctx, t, "the deployment at zero", func() bool {
		var v struct {
			Instances struct{ Running, Desired int } `json:"instances"`
		}
		r := do(t, http.MethodGet, dev.Base+"/deploy/"+id, "")
		return json.Unmarshal([]byte(r.body), &v) == nil && v.Instances.Running == 0 && v.Instances.Desired == 0
	})

	start := time.Now()
	r := replica.post(t, "/v1/openai/chat/completions", "tok-dev", chat("dev/capped"))
	took := time.Since(start)
	if got := errorOf(t, r); got != (openAIError{http.StatusTooManyRequests, "insufficient_quota", "insufficient_quota"}) {
		t.Errorf("straight to the replica, over the limit: %d %s after %v, want 429 insufficient_quota", r.status, r.body, took)
	}
	if took > time.Second {
		t.Errorf("the replica answered after %v, want at once", took)
	}
	if !strings.Contains(r.body, "spending limit") {
		t.Errorf("the replica's refusal does not name the spending limit: %s", r.body)
	}
	r = e.post(t, "/v1/openai/chat/completions", "tok-dev", chat("dev/capped"))
	if got := errorOf(t, r); got != (openAIError{http.StatusTooManyRequests, "insufficient_quota", "insufficient_quota"}) {
		t.Errorf("through Envoy, over the limit: %d %s, want 429 insufficient_quota", r.status, r.body)
	}

	if r := do(t, http.MethodPut, dev.Base+"/account", `{"spending_limit_usd": 1000}`); r.status != http.StatusOK {
		t.Fatalf("raise the limit: %d %s", r.status, r.body)
	}
	var last reply
	e.waitFor(ctx, t, "a request through the replica served after raising the limit", func() bool {
		last = replica.post(t, "/v1/openai/chat/completions", "tok-dev", chat("dev/capped"))
		if last.status != http.StatusOK && last.status != http.StatusTooManyRequests {
			t.Fatalf("straight to the replica, after raising the limit: %d %s", last.status, last.body)
		}
		return last.status == http.StatusOK
	})
	checkNoEnvoyReject(t, e)
}

// do sends body ("" = none) to url as the dev user and returns the reply.
func do(t *testing.T, method, url, body string) reply {
	t.Helper()
	var b []byte
	if body != "" {
		b = []byte(body)
	}
	r := e2e.SendT(t, nil, method, url, "tok-dev", b)
	return reply{r.Status, r.Header, string(r.Body)}
}
