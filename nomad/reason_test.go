package nomad

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/nomad/api"
)

func TestPlacementReason(t *testing.T) {
	tests := []struct {
		name    string
		m       *api.AllocationMetric
		gpu     string
		numGPUs int
		want    string
	}{
		{
			name: "GPUs in use (what Nomad 1.10 says with the fake plugin)",
			m: &api.AllocationMetric{NodesEvaluated: 1, NodesExhausted: 1, NodesInPool: 1,
				DimensionExhausted: map[string]int{"devices: no devices match request": 1}},
			gpu: "H100-80GB", numGPUs: 2,
			want: `no node has 2 free H100-80GB GPUs (Nomad: 1 node evaluated, 1 exhausted, "devices: no devices match request")`,
		},
		{
			name: "no node has the GPU model",
			m: &api.AllocationMetric{NodesEvaluated: 3, NodesFiltered: 3, NodesInPool: 3,
				ConstraintFiltered: map[string]int{"missing devices": 3}},
			gpu: "L4-24GB", numGPUs: 1,
			want: `no node has 1 free L4-24GB GPU (Nomad: 3 nodes evaluated, 3 filtered, filtered by "missing devices")`,
		},
		{
			name: "memory",
			m: &api.AllocationMetric{NodesEvaluated: 2, NodesExhausted: 2, NodesInPool: 2,
				DimensionExhausted: map[string]int{"memory": 2}},
			gpu: "H100-80GB", numGPUs: 1,
			want: `no node has enough free CPU or memory for the model server (Nomad: 2 nodes evaluated, 2 exhausted, "memory")`,
		},
		{
			name: "no nodes",
			m:    &api.AllocationMetric{},
			gpu:  "H100-80GB", numGPUs: 1,
			want: "no Nomad client node is up in the job's datacenters and node pool",
		},
		{
			name: "other constraint",
			m: &api.AllocationMetric{NodesEvaluated: 2, NodesFiltered: 2, NodesInPool: 2,
				ConstraintFiltered: map[string]int{"${node.class} = gpu": 2}},
			gpu: "H100-80GB", numGPUs: 1,
			want: `no node matches the job's constraints (Nomad: 2 nodes evaluated, 2 filtered, filtered by "${node.class} = gpu")`,
		},
		{name: "nil", gpu: "H100-80GB", numGPUs: 1, want: "Nomad could not place the instance"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, placementReason(tt.m, tt.gpu, tt.numGPUs)); diff != "" {
				t.Errorf("placementReason (-want +got):\n%s", diff)
			}
		})
	}
}
