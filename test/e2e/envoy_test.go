package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const clustersText = `thaw-activator::observability_name::thaw-activator
thaw-activator::default_priority::max_connections::1024
thaw-activator::127.0.0.1:10001::cx_active::2
thaw-activator::127.0.0.1:10001::rq_total::7
thaw-activator::127.0.0.1:10001::health_flags::healthy
deploy-d1::127.0.0.1:10002::health_flags::healthy
deploy-d1::127.0.0.1:10002::priority::0
deploy-d1::127.0.0.1:10002::rq_total::3
deploy-d1::127.0.0.1:10003::health_flags::/failed_eds_health
deploy-d1::127.0.0.1:10003::priority::1
deploy-d1::127.0.0.1:10003::rq_total::0
`

func TestParseClusters(t *testing.T) {
	for _, tc := range []struct {
		cluster, stat string
		want          map[string]string
	}{
		{"deploy-d1", "health_flags", map[string]string{"127.0.0.1:10002": "healthy", "127.0.0.1:10003": "/failed_eds_health"}},
		{"deploy-d1", "priority", map[string]string{"127.0.0.1:10002": "0", "127.0.0.1:10003": "1"}},
		{"thaw-activator", "rq_total", map[string]string{"127.0.0.1:10001": "7"}},
		{"deploy-d2", "rq_total", map[string]string{}},
		{"thaw-activator", "max_connections", map[string]string{}}, // a cluster setting, not a host's
	} {
		t.Run(tc.cluster+"/"+tc.stat, func(t *testing.T) {
			got, err := ParseClusters(strings.NewReader(clustersText), tc.cluster, tc.stat)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ParseClusters (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseStats(t *testing.T) {
	in := `cluster.thaw-activator.upstream_rq_total: 12
control_plane.connected_state: 1
listener_manager.lds.update_rejected: 0
cluster.thaw-activator.upstream_rq_time: P0(nan,1.0) P25(nan,1.025)
server.version_text: "1.34.0"
no colon here
`
	got, err := ParseStats(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{
		"cluster.thaw-activator.upstream_rq_total": 12,
		"control_plane.connected_state":            1,
		"listener_manager.lds.update_rejected":     0,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ParseStats (-want +got):\n%s", diff)
	}
}

// TestEnvoyAdmin: the admin client's requests and its reading of the
// answers, against a fake admin.
func TestEnvoyAdmin(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/clusters":
			fmt.Fprint(w, clustersText)
		case "/stats":
			if f := r.URL.Query().Get("filter"); f != "" {
				if f != `^control_plane\.connected_state$` {
					fmt.Fprint(w, "")
					return
				}
				fmt.Fprint(w, "control_plane.connected_state: 1\n")
				return
			}
			fmt.Fprint(w, "a.update_rejected: 2\nb.update_rejected: 0\nc.other: 5\n")
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	a := EnvoyAdmin{URL: srv.URL}
	ctx := context.Background()

	if n, err := a.Stat(ctx, "control_plane.connected_state"); err != nil || n != 1 {
		t.Errorf("Stat(connected_state) = %d, %v; want 1", n, err)
	}
	if n, err := a.Stat(ctx, "absent.stat"); err != nil || n != -1 {
		t.Errorf("Stat(absent) = %d, %v; want -1", n, err)
	}
	stats, err := a.Stats(ctx, "update_rejected")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]int64{"a.update_rejected": 2, "b.update_rejected": 0}, stats); diff != "" {
		t.Errorf("Stats (-want +got):\n%s", diff)
	}
	hosts, err := a.HostStats(ctx, "deploy-d1", "rq_total")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]string{"127.0.0.1:10002": "3", "127.0.0.1:10003": "0"}, hosts); diff != "" {
		t.Errorf("HostStats (-want +got):\n%s", diff)
	}
	if _, err := (EnvoyAdmin{URL: srv.URL + "/nope"}).HostStats(ctx, "x", "y"); err == nil {
		t.Error("HostStats against a 404: no error")
	}
}
