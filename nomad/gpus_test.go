package nomad

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/nomad/api"
)

// gpuNode is a ready, eligible node with GPUs of model name, IDs ids, the
// ones in sick unhealthy.
func gpuNode(id, name string, ids []string, sick ...string) *api.NodeListStub {
	dev := &api.NodeDeviceResource{Vendor: "nvidia", Type: "gpu", Name: name}
	for _, d := range ids {
		dev.Instances = append(dev.Instances, &api.NodeDevice{ID: d, Healthy: !strings.Contains(strings.Join(sick, ","), d)})
	}
	return &api.NodeListStub{ID: id, Status: api.NodeStatusReady, SchedulingEligibility: api.NodeSchedulingEligible,
		NodeResources: &api.NodeResources{Devices: []*api.NodeDeviceResource{
			dev, {Vendor: "intel", Type: "fpga", Name: "x", Instances: []*api.NodeDevice{{ID: "f", Healthy: true}}},
		}}}
}

// usingGPUs is an allocation in client status holding device ids.
func usingGPUs(status string, ids ...string) *api.Allocation {
	return &api.Allocation{ClientStatus: status, AllocatedResources: &api.AllocatedResources{
		Tasks: map[string]*api.AllocatedTaskResources{"server": {
			Devices: []*api.AllocatedDeviceResource{{Vendor: "nvidia", Type: "gpu", Name: "H100-80GB", DeviceIDs: ids}},
		}}}}
}

func TestGPUCounts(t *testing.T) {
	draining := gpuNode("n3", "A100-80GB", []string{"c1", "c2"})
	draining.Drain = true
	down := gpuNode("n4", "A100-80GB", []string{"d1"})
	down.Status = api.NodeStatusDown
	nodes := []*api.NodeListStub{
		gpuNode("n1", "H100-80GB", []string{"a1", "a2", "a3", "a4"}, "a4"),
		gpuNode("n2", "A100-80GB", []string{"b1", "b2"}),
		draining, down,
		{ID: "cpu-only", Status: api.NodeStatusReady, NodeResources: &api.NodeResources{}},
	}
	allocs := map[string][]*api.Allocation{
		"n1": {usingGPUs("running", "a1"), usingGPUs("pending", "a2"), usingGPUs("complete", "a3"), {ClientStatus: "running"}},
	}
	want := map[string]GPUCount{
		// a4 unhealthy; a1 and a2 held by live allocations; a3's ended.
		"H100-80GB": {Total: 3, Free: 1},
		// n2 free; n3 draining takes no new work; n4 down.
		"A100-80GB": {Total: 4, Free: 2},
	}
	if diff := cmp.Diff(want, gpuCounts(nodes, allocs)); diff != "" {
		t.Errorf("gpuCounts (-want +got):\n%s", diff)
	}
}

// TestGPUsReadsNomad: GPUs lists the nodes with their resources and reads
// the allocations of the GPU nodes only.
func TestGPUsReadsNomad(t *testing.T) {
	var asked []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		asked = append(asked, req.URL.RequestURI())
		var body any
		switch req.URL.Path {
		case "/v1/nodes":
			body = []*api.NodeListStub{gpuNode("n1", "H100-80GB", []string{"a1", "a2"}),
				{ID: "cpu-only", Status: api.NodeStatusReady}}
		case "/v1/node/n1/allocations":
			body = []*api.Allocation{usingGPUs("running", "a2")}
		default:
			http.NotFound(w, req)
			return
		}
		_ = json.NewEncoder(w).Encode(body)
	}))
	defer srv.Close()
	got, err := runtimeAt(t, srv.URL).GPUs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]GPUCount{"H100-80GB": {Total: 2, Free: 1}}, got); diff != "" {
		t.Errorf("GPUs (-want +got):\n%s", diff)
	}
	if want := []string{"/v1/nodes?resources=true", "/v1/node/n1/allocations"}; !cmp.Equal(want, asked) {
		t.Errorf("asked Nomad %q, want %q", asked, want)
	}

	if _, err := runtimeAt(t, "http://127.0.0.1:1").GPUs(context.Background()); err == nil {
		t.Error("GPUs with Nomad unreachable: no error")
	}
}
