package main

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/thawhq/thaw/internal/envoytest"

	bootstrap "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/thawhq/thaw/bench"
	"github.com/thawhq/thaw/routing"
)

// repoBin is the repository's bin/ directory.
func repoBin(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(filepath.Dir(strings.TrimSpace(string(out))), "bin")
}

func TestStaticEnvoyConfig(t *testing.T) {
	b, err := staticEnvoyConfig("127.0.0.1:10001", "127.0.0.1:10002", "127.0.0.1:10003")
	if err != nil {
		t.Fatal(err)
	}
	var c bootstrap.Bootstrap
	if err := protojson.Unmarshal(b, &c); err != nil {
		t.Fatalf("not an Envoy bootstrap: %v\n%s", err, b)
	}
	cl := c.GetStaticResources().GetClusters()
	if len(cl) != 1 || cl[0].GetType() != cluster.Cluster_STATIC || len(cl[0].GetLoadAssignment().GetEndpoints()) != 1 ||
		cl[0].GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress().GetPortValue() != 10003 {
		t.Errorf("clusters = %v, want one STATIC cluster to port 10003", cl)
	}
	ls := c.GetStaticResources().GetListeners()
	if len(ls) != 1 || ls[0].GetAddress().GetSocketAddress().GetPortValue() != 10001 ||
		c.GetAdmin().GetAddress().GetSocketAddress().GetPortValue() != 10002 {
		t.Errorf("listeners = %v, admin = %v: want the listener on 10001 and the admin on 10002", ls, c.GetAdmin())
	}
	if _, err := staticEnvoyConfig("nope", "127.0.0.1:1", "127.0.0.1:2"); err == nil {
		t.Error("staticEnvoyConfig accepted a listen address without a port")
	}

	envoytest.Validate(t, b)
}

// TestProbeServers: the stand-in /authz routes straight to the deployment
// named in the query, as thaw's /authz does for a warm model.
func TestProbeServers(t *testing.T) {
	api, old, nu, err := probeServers()
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	defer old.Close()
	defer nu.Close()
	resp, err := http.Post("http://"+api.Addr+routing.AuthzPrefix+"/v1/chat/completions?d=d-0007", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get(routing.DeployIDHeader) != "d-0007" || resp.Header.Get(routing.RouteHeader) != routing.Direct {
		t.Errorf("authz: %d %v", resp.StatusCode, resp.Header)
	}
	c := &http.Client{Timeout: 5 * time.Second}
	for addr, want := range map[string]string{api.Addr: "api", old.Addr: "old", nu.Addr: "new"} {
		if got, err := probeOnce(context.Background(), c, "http://"+addr+"/v1/chat/completions"); got != want || err != nil {
			t.Errorf("probe %s = %q, %v; want %q", addr, got, err, want)
		}
	}
}

// TestChangedDistinct: every measured change touches a deployment of its
// own (it must still route to "old" before the change).
func TestChangedDistinct(t *testing.T) {
	seen := map[int]bool{}
	for k := range 20 {
		i := changed(k, 1000)
		if i < 0 || i >= 1000 || seen[i] {
			t.Fatalf("changed(%d, 1000) = %d: out of range or repeated", k, i)
		}
		seen[i] = true
	}
}

// TestXDSScaleSmall runs the xds_scale scenario end to end at a small size
// with the real Envoy.
func TestXDSScaleSmall(t *testing.T) {
	bin := repoBin(t)
	if _, err := os.Stat(filepath.Join(bin, "envoy")); err != nil {
		t.Skipf("bin/envoy missing (make deps)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res := runXDSScale(ctx, filepath.Join(bin, "thaw"), xdsConfig{Deployments: 20, Changes: 3})
	if res.Status != "ok" {
		t.Fatalf("xds_scale: %s: %s", res.Status, res.Why)
	}
	for _, proto := range []string{"sotw", "delta"} {
		fig := res.Figures[proto].(map[string]any)
		if s := fig["applied_ms"].(bench.Summary); s.N != 3 || s.MinMs <= 0 {
			t.Errorf("%s: applied_ms = %+v, want 3 positive samples", proto, s)
		}
		if fig["nacks"].(int64) != 0 {
			t.Errorf("%s: %v NACKs", proto, fig["nacks"])
		}
	}
}
