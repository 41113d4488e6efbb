package envoy_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/thawhq/thaw/httperr"
	"github.com/thawhq/thaw/routing"
	"github.com/thawhq/thaw/test/e2e"
	"github.com/thawhq/thaw/xds"
)

// TestAPIReplicaDown: with two thaw server replicas in the thaw-api
// cluster, one of them down (SIGKILLed: its port refuses connections), every
// request through the edge is answered by the other, both on the catch-all
// route and for the /authz check of an inference request, whose failure
// would otherwise be Envoy's 503. Envoy did try the dead replica (a connect
// failure is counted), retried on the live one and ejected the dead one.
func TestAPIReplicaDown(t *testing.T) {
	for _, tc := range []struct {
		name, method, path string
		want               int
	}{
		// The live replica's /authz refuses every token: its 403 reaches
		// the client, Envoy's own error would be a 503.
		{"authz", http.MethodPost, "/v1/chat/completions", http.StatusForbidden},
		{"catch-all", http.MethodGet, "/deploy/list", http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startAPIReplicasEdge(t)
			for i := range 20 {
				r := e2e.SendT(t, e.client, tc.method, e.url+tc.path, "tok", []byte(`{"model":"alice/warm"}`))
				if r.Status != tc.want || !strings.Contains(string(r.Body), "live replica") {
					t.Errorf("request %d: HTTP %d %s; want %d from the live replica", i, r.Status, r.Body, tc.want)
				}
			}
			if n := e.stat(t, "cluster.thaw-api.upstream_cx_connect_fail"); n < 1 {
				t.Errorf("envoy never tried the dead replica (%d connect failures): the test proves nothing", n)
			}
			if n := e.stat(t, "cluster.thaw-api.outlier_detection.ejections_enforced_total"); n < 1 {
				t.Errorf("the dead replica was not ejected (%d ejections)", n)
			}
		})
	}
}

// startAPIReplicasEdge starts Envoy on an xDS server whose thaw-api cluster
// holds a dead replica and a live one.
func startAPIReplicasEdge(t *testing.T) *edge {
	t.Helper()
	bin := envoyBin(t)
	mux := http.NewServeMux()
	mux.HandleFunc(routing.AuthzPrefix+"/", func(w http.ResponseWriter, _ *http.Request) {
		httperr.Encode(w, http.StatusForbidden, "permission_denied", "", "refused by the live replica")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"answered_by":"live replica","path":%q}`+"\n", r.URL.Path)
	})
	live := httptest.NewServer(mux)
	t.Cleanup(live.Close)
	dead := freeAddr(t) // nothing listens: refused, as after a SIGKILL

	xln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen, admin := freeAddr(t), freeAddr(t)
	xs, err := xds.New(xds.Config{
		Listener: xln,
		Edge:     xds.State{Listen: listen, APIs: []string{dead, strings.TrimPrefix(live.URL, "http://")}, HoldTimeout: time.Minute},
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- xs.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	boot, err := xds.Bootstrap(xds.BootstrapConfig{XDSAddr: xln.Addr().String(), NodeID: "edge-api-replicas", Admin: admin})
	if err != nil {
		t.Fatal(err)
	}
	e2e.StartEnvoyT(t, e2e.EnvoyConfig{Bin: bin, Bootstrap: boot, Admin: admin, Dir: t.TempDir()})
	return &edge{url: "http://" + listen, admin: "http://" + admin, client: &http.Client{Timeout: 10 * time.Second}}
}
