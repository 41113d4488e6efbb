package e2e

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseReplicas(t *testing.T) {
	out := "cluster: nomad node ready with 6 fake GPUs\n" +
		"[replica 1] time=... msg=\"cluster: replica 9 pid 1 api x xds y\"\n" +
		"cluster: replica 1 pid 4100 api http://127.0.0.1:8080 xds 127.0.0.1:18000\n" +
		"[replica 2] level=INFO msg=listening\n" +
		"cluster: replica 2 pid 4102 api http://127.0.0.1:8081 xds 127.0.0.1:18001\n" +
		"cluster: ready: export THAW_ADDR=http://127.0.0.1:10000 THAW_TOKEN=t\n"
	got, err := ParseReplicas(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []Replica{
		{N: 1, PID: 4100, API: "http://127.0.0.1:8080", XDS: "127.0.0.1:18000"},
		{N: 2, PID: 4102, API: "http://127.0.0.1:8081", XDS: "127.0.0.1:18001"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("replicas (-want +got):\n%s", diff)
	}
	for name, bad := range map[string]string{
		"none": "cluster: ready: export THAW_ADDR=http://127.0.0.1:10000 THAW_TOKEN=t\n",
		"gap":  "cluster: replica 2 pid 4102 api http://127.0.0.1:8081 xds 127.0.0.1:18001\n",
	} {
		if rs, err := ParseReplicas(bad); err == nil {
			t.Errorf("%s: ParseReplicas = %v, want an error", name, rs)
		}
	}
}
