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
	"sync/atomic"
	"testing"
	"time"

	"github.com/thawhq/thaw/httperr"
	"github.com/thawhq/thaw/routing"
	"github.com/thawhq/thaw/test/e2e"
	"github.com/thawhq/thaw/xds"
)

// TestAPIReplicaDown: with two thaw server replicas in the thaw-api
// cluster, one of them down, requests through the edge are answered by the
// other: the /authz check of an inference request (whose failure would be
// Envoy's 503) and catch-all reads whether the dead replica refuses
// connections (SIGKILLed earlier) or dies while answering (SIGKILLed under
// the request); a write is retried only when the dead replica cannot have
// seen it, so the one it died under gets a 503 rather than being applied
// twice. Envoy did try the dead replica and ejected it.
func TestAPIReplicaDown(t *testing.T) {
	for _, tc := range []struct {
		name, method, path string
		diesUnder          bool
		want               int
		// failedWrites: the requests that hit the dying replica fail.
		failedWrites bool
	}{
		// The live replica's /authz refuses every token: its 403 reaches
		// the client, Envoy's own error would be a 503.
		{name: "authz/refused", method: http.MethodPost, path: "/v1/chat/completions", want: http.StatusForbidden},
		{name: "authz/dies under it", method: http.MethodPost, path: "/v1/chat/completions", diesUnder: true, want: http.StatusForbidden},
		{name: "read/refused", method: http.MethodGet, path: "/deploy/list", want: http.StatusOK},
		{name: "read/dies under it", method: http.MethodGet, path: "/deploy/list", diesUnder: true, want: http.StatusOK},
		{name: "write/refused", method: http.MethodPost, path: "/deploy/llm", want: http.StatusOK},
		{name: "write/dies under it", method: http.MethodPost, path: "/deploy/llm", diesUnder: true, want: http.StatusOK, failedWrites: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, dying := startAPIReplicasEdge(t, tc.diesUnder)
			failed := 0
			for i := range 20 {
				r := e2e.SendT(t, e.client, tc.method, e.url+tc.path, "tok", []byte(`{"model":"alice/warm"}`))
				switch {
				case r.Status == tc.want && strings.Contains(string(r.Body), "live replica"):
				case tc.failedWrites && r.Status == http.StatusServiceUnavailable:
					failed++
				default:
					t.Errorf("request %d: HTTP %d %s; want %d from the live replica", i, r.Status, r.Body, tc.want)
				}
			}
			if tc.failedWrites && (failed < 1 || int64(failed) != dying.Load()) {
				t.Errorf("%d writes failed, the dying replica took %d: want each it took to fail, none retried", failed, dying.Load())
			}
			fails := e.stat(t, "cluster.thaw-api.upstream_cx_connect_fail")
			if tc.diesUnder {
				fails = int(dying.Load())
			}
			if fails < 1 {
				t.Errorf("envoy never tried the dead replica: the test proves nothing")
			}
			if n := e.stat(t, "cluster.thaw-api.outlier_detection.ejections_enforced_total"); n < 1 {
				t.Errorf("the dead replica was not ejected (%d ejections)", n)
			}
		})
	}
}

// startAPIReplicasEdge starts Envoy on an xDS server whose thaw-api cluster
// holds a live replica and a dead one: with diesUnder, one that drops each
// request's connection before answering (counted in dying), else a port
// nothing listens on.
func startAPIReplicasEdge(t *testing.T, diesUnder bool) (*edge, *atomic.Int64) {
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
	var dying atomic.Int64
	if diesUnder {
		d := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			dying.Add(1)
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close() // what the kernel does to a killed process's connections
			}
		}))
		t.Cleanup(d.Close)
		dead = strings.TrimPrefix(d.URL, "http://")
	}

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
	return &edge{url: "http://" + listen, admin: "http://" + admin, client: &http.Client{Timeout: 10 * time.Second}}, &dying
}
