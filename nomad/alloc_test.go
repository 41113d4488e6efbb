package nomad

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/nomad/api"
)

func TestAddrOf(t *testing.T) {
	tests := []struct {
		name string
		r    *api.AllocatedResources
		want string
	}{
		{"nil", nil, ""},
		{"shared port", &api.AllocatedResources{Shared: api.AllocatedSharedResources{
			Ports: []api.PortMapping{{Label: "other", Value: 1}, {Label: "http", Value: 25097, HostIP: "10.0.0.7"}}}}, "10.0.0.7:25097"},
		{"network dynamic port", &api.AllocatedResources{Shared: api.AllocatedSharedResources{
			Networks: []*api.NetworkResource{{IP: "10.0.0.8", DynamicPorts: []api.Port{{Label: "http", Value: 31000}}}}}}, "10.0.0.8:31000"},
		{"IPv6", &api.AllocatedResources{Shared: api.AllocatedSharedResources{
			Ports: []api.PortMapping{{Label: "http", Value: 8000, HostIP: "fd00::1"}}}}, "[fd00::1]:8000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, addrOf(tt.r)); diff != "" {
				t.Errorf("addrOf (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFailReason(t *testing.T) {
	exited := &api.TaskState{State: "dead", Failed: true, Restarts: 2, Events: []*api.TaskEvent{
		{Type: "Started", DisplayMessage: "Task started by client"},
		{Type: api.TaskTerminated, DisplayMessage: "Exit Code: 1"},
		{Type: api.TaskNotRestarting, DisplayMessage: `Exceeded allowed attempts 2 in interval 5m0s and mode is "fail"`},
	}}
	tests := []struct {
		name string
		a    allocView
		want string
	}{
		{"crash loop", allocView{ClientStatus: "failed", TaskStates: map[string]*api.TaskState{"server": exited}},
			"model server failed: Terminated: Exit Code: 1 (restarted 2 times)"},
		{"driver failure", allocView{ClientStatus: "failed", TaskStates: map[string]*api.TaskState{"server": {Events: []*api.TaskEvent{
			{Type: api.TaskDriverFailure, DisplayMessage: "failed to pull image vllm/vllm-openai"}}}}},
			"model server failed: Driver Failure: failed to pull image vllm/vllm-openai"},
		{"lost", allocView{ClientStatus: "lost", NodeName: "gpu-7"}, "Nomad lost the node running the instance (gpu-7)"},
		{"stopped by Nomad", allocView{ClientStatus: "complete", DesiredStatus: "stop", DesiredDescription: "alloc is being migrated"},
			"stopped by Nomad: alloc is being migrated"},
		{"nothing known", allocView{ClientStatus: "complete"}, "model server ended (Nomad allocation complete)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, failReason(tt.a)); diff != "" {
				t.Errorf("failReason (-want +got):\n%s", diff)
			}
		})
	}
}

// TestViewOfAlloc: an event's allocation and a listing's stub of it give the
// same view, but for the address only the full allocation carries; a job
// without a type or version (as an event may send it) does not matter.
func TestViewOfAlloc(t *testing.T) {
	states := map[string]*api.TaskState{"server": {State: "running"}}
	a := &api.Allocation{
		ID: "a1", JobID: "thaw-d1", TaskGroup: "i-1", NodeName: "gpu-7",
		DesiredStatus: "run", ClientStatus: "running",
		DesiredDescription: "placed", ClientDescription: "Tasks are running",
		TaskStates: states, CreateIndex: 3, ModifyIndex: 9,
		CreateTime: 1700000000123456789, ModifyTime: 1700000009000000000,
		Job: &api.Job{},
		AllocatedResources: &api.AllocatedResources{Shared: api.AllocatedSharedResources{
			Ports: []api.PortMapping{{Label: "http", Value: 25097, HostIP: "10.0.0.7"}}}},
	}
	want := allocView{
		ID: "a1", JobID: "thaw-d1", TaskGroup: "i-1", NodeName: "gpu-7",
		DesiredStatus: "run", ClientStatus: "running",
		DesiredDescription: "placed", ClientDescription: "Tasks are running",
		Addr: "10.0.0.7:25097", TaskStates: states, CreateIndex: 3, ModifyIndex: 9,
		CreateTime: 1700000000123456789, ModifyTime: 1700000009000000000,
	}
	if diff := cmp.Diff(want, viewOfAlloc(a)); diff != "" {
		t.Errorf("viewOfAlloc (-want +got):\n%s", diff)
	}
	want.Addr = ""
	if diff := cmp.Diff(want, viewOfStub(&api.AllocationListStub{
		ID: "a1", JobID: "thaw-d1", TaskGroup: "i-1", NodeName: "gpu-7",
		DesiredStatus: "run", ClientStatus: "running",
		DesiredDescription: "placed", ClientDescription: "Tasks are running",
		TaskStates: states, CreateIndex: 3, ModifyIndex: 9,
		CreateTime: 1700000000123456789, ModifyTime: 1700000009000000000,
	})); diff != "" {
		t.Errorf("viewOfStub (-want +got):\n%s", diff)
	}
}
