package envoy_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/thawhq/thaw/test/e2e"

	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/thawhq/thaw/routing"
)

// thawBinary is the thaw binary (e2e.ThawBin); it skips the test while
// `thaw dev` has no --xds-addr flag.
func thawBinary(t *testing.T) string {
	t.Helper()
	bin := e2e.ThawT(t)
	help, _ := exec.Command(bin, "dev", "-h").CombinedOutput()
	if !bytes.Contains(help, []byte("-xds-addr")) {
		t.Skip("thaw dev has no --xds-addr flag yet")
	}
	return bin
}

// devTest starts a parallel test of the real thaw binary behind Envoy:
// it needs both, and the returned context ends after 2 minutes or with
// the test. It returns the context and the thaw binary.
func devTest(t *testing.T) (context.Context, string) {
	t.Helper()
	t.Parallel()
	envoyBin(t)
	thaw := thawBinary(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx, thaw
}

// waitUsersFile waits for thaw dev to write its users file into data, the
// file `thaw activator --users-file` reads.
func waitUsersFile(t *testing.T, data string) {
	t.Helper()
	if !e2e.Eventually(20*time.Second, 20*time.Millisecond, func() bool {
		_, err := os.Stat(filepath.Join(data, "users"))
		return err == nil
	}) {
		t.Fatal("thaw dev wrote no users file")
	}
}

// createDeployment creates thaw dev's user's deployment of model name
// (one A100-80GB, batch size batch, min to max instances) through the edge
// and returns its id.
func (e *edge) createDeployment(t *testing.T, name string, batch, minInstances, maxInstances int) string {
	t.Helper()
	r := e.post(t, "/deploy/llm", "tok-dev", fmt.Sprintf(`{"model_name":%q,"gpu":"A100-80GB","num_gpus":1,"max_batch_size":%d,`+
		`"hf":{"repo":"org/%s"},"settings":{"min_instances":%d,"max_instances":%d}}`, name, batch, name, minInstances, maxInstances))
	var d struct {
		ID string `json:"deploy_id"`
	}
	if r.status != http.StatusOK && r.status != http.StatusCreated || json.Unmarshal([]byte(r.body), &d) != nil || d.ID == "" {
		t.Fatalf("create deployment %s through %s: %d %s", name, e.url, r.status, r.body)
	}
	return d.ID
}

// startEnvoy starts Envoy with the bootstrap `thaw envoy-bootstrap` writes
// for thaw's xDS server at xdsAddr and an admin at admin, and returns the
// edge at edgeAddr (thaw's --edge-addr) once it answers /healthz.
func startEnvoy(ctx context.Context, t *testing.T, thaw, xdsAddr, edgeAddr, admin string) *edge {
	t.Helper()
	bin := envoyBin(t)
	boot, err := exec.Command(thaw, "envoy-bootstrap", "--xds-addr", xdsAddr, "--admin", admin).Output()
	if err != nil {
		t.Fatalf("thaw envoy-bootstrap: %v", err)
	}
	e2e.StartEnvoyT(t, e2e.EnvoyConfig{Bin: bin, Bootstrap: boot, Admin: admin, Dir: t.TempDir()})
	e := &edge{url: "http://" + edgeAddr, admin: "http://" + admin, client: &http.Client{Timeout: time.Minute}}
	e.waitHealthy(ctx, t)
	return e
}

// TestThawDevBehindEnvoy runs the real `thaw dev --xds-addr` with Envoy in
// front, configured from `thaw envoy-bootstrap`: the deploy API works
// through the edge, a cold model is woken and served through the activator,
// the next request goes straight to the instance.
func TestThawDevBehindEnvoy(t *testing.T) {
	ctx, thaw := devTest(t)
	xdsAddr, edgeAddr, admin := freeAddr(t), freeAddr(t), freeAddr(t)

	dev := e2e.StartThawT(t, e2e.ThawConfig{Bin: thaw, Env: []string{"THAW_DEV_TOKEN=tok-dev"}, Args: []string{"dev",
		"--data-dir", t.TempDir(),
		"--xds-addr", xdsAddr, "--edge-addr", edgeAddr, "--envoy-admin", "http://" + admin,
		"--sim-startup", "300ms", "--sim-tokens-per-second", "500"}})
	api := strings.TrimPrefix(dev.Base, "http://")
	e := startEnvoy(ctx, t, thaw, xdsAddr, edgeAddr, admin)

	// The deploy API, through Envoy.
	id := e.createDeployment(t, "m1", 4, 0, 1)

	// Cold: held by thaw (the activator), served once the instance is up.
	r := e.post(t, "/v1/openai/chat/completions", "tok-dev", chat("dev/m1"))
	if r.status != http.StatusOK || r.header.Get(routing.ColdStartHeader) == "" {
		t.Fatalf("cold request: %d %v %s", r.status, r.header, r.body)
	}
	// Warm: straight to the instance, once Envoy has it.
	var instance string
	e.waitFor(ctx, t, "instance in envoy", func() bool {
		instance = e.instanceHost(t, "deploy-"+id, api)
		return instance != ""
	})
	before := e.hostStat(t, "deploy-"+id, instance, "rq_total")
	act := e.stat(t, "cluster.thaw-activator.upstream_rq_total") + e.hostStat(t, "deploy-"+id, api, "rq_total")
	for i := 0; i < 3; i++ {
		if r := e.post(t, "/v1/chat/completions", "tok-dev", chat("dev/m1")); r.status != http.StatusOK || r.header.Get(routing.ColdStartHeader) != "" {
			t.Fatalf("warm request: %d %v %s", r.status, r.header, r.body)
		}
	}
	if n := e.hostStat(t, "deploy-"+id, instance, "rq_total") - before; n != 3 {
		t.Errorf("envoy sent %d warm requests to the instance, want 3", n)
	}
	if n := e.stat(t, "cluster.thaw-activator.upstream_rq_total") + e.hostStat(t, "deploy-"+id, api, "rq_total") - act; n != 0 {
		t.Errorf("envoy sent %d warm requests to the activator, want 0", n)
	}
	if r := e.post(t, "/v1/chat/completions", "tok-dev", chat("dev/nope")); errorOf(t, r) != (openAIError{404, "model_not_found", "not_found_error"}) {
		t.Errorf("unknown model: %d %s", r.status, r.body)
	}
	checkNoEnvoyReject(t, e)
}

// instanceHost is a priority-0 host of the cluster other than skip.
func (e *edge) instanceHost(t *testing.T, cluster, skip string) string {
	t.Helper()
	for host, prio := range e.hostsWith(t, cluster, "priority") {
		if host != skip && prio == "0" {
			return host
		}
	}
	return ""
}

// hostStat is one numeric stat of a host in Envoy's /clusters.
func (e *edge) hostStat(t *testing.T, cluster, host, stat string) int {
	t.Helper()
	n, _ := strconv.Atoi(e.hostsWith(t, cluster, stat)[host])
	return n
}

// checkNoEnvoyReject: Envoy rejected no configuration.
func checkNoEnvoyReject(t *testing.T, e *edge) {
	t.Helper()
	for name, v := range e.statsContaining(t, "update_rejected") {
		if v != 0 {
			t.Errorf("envoy %s = %d", name, v)
		}
	}
	if n := e.stat(t, "control_plane.connected_state"); n != 1 {
		t.Errorf("envoy control_plane.connected_state = %d, want 1", n)
	}
}
