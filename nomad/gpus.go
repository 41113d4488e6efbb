package nomad

import (
	"context"
	"fmt"

	"github.com/hashicorp/nomad/api"
)

// GPUCount is the GPUs of one model the Nomad clients have (healthy, on
// ready nodes) and those free (not held by a live allocation, on nodes
// that take new work).
type GPUCount struct{ Total, Free int }

// GPUs reports the Nomad clients' GPUs (the "nvidia/gpu" devices thaw's
// jobs ask for) by model, the name a deployment's gpu must match. It reads
// the nodes and each GPU node's allocations (the token needs node:read):
// callers that ask often cache it. Read-only.
func (r *Runtime) GPUs(ctx context.Context) (map[string]GPUCount, error) {
	q := (&api.QueryOptions{Params: map[string]string{"resources": "true"}}).WithContext(ctx)
	nodes, _, err := r.nc.Nodes().List(q)
	if err != nil {
		return nil, fmt.Errorf("nomad: list nodes: %w", denied(plainErr(err), needNodeRead))
	}
	allocs := map[string][]*api.Allocation{}
	for _, n := range nodes {
		if len(gpusOf(n)) == 0 {
			continue
		}
		as, _, err := r.nc.Nodes().Allocations(n.ID, (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return nil, fmt.Errorf("nomad: allocations of node %s: %w", shortID(n.ID), denied(plainErr(err), needNodeRead))
		}
		allocs[n.ID] = as
	}
	return gpuCounts(nodes, allocs), nil
}

// gpusOf returns a node's GPU device groups.
func gpusOf(n *api.NodeListStub) []*api.NodeDeviceResource {
	if n.NodeResources == nil {
		return nil
	}
	var out []*api.NodeDeviceResource
	for _, d := range n.NodeResources.Devices {
		if d != nil && d.Vendor+"/"+d.Type == gpuDevice {
			out = append(out, d)
		}
	}
	return out
}

// gpuDevice is the device thaw's jobs ask for (jobs.DeviceName).
const gpuDevice = "nvidia/gpu"

// gpuCounts counts, by model, the healthy GPUs of ready nodes and those no
// live allocation holds on the nodes that take new work (eligible, not
// draining). allocs are each node's allocations. Pure.
func gpuCounts(nodes []*api.NodeListStub, allocs map[string][]*api.Allocation) map[string]GPUCount {
	out := map[string]GPUCount{}
	for _, n := range nodes {
		if n.Status != api.NodeStatusReady {
			continue
		}
		used := map[string]bool{}
		for _, a := range allocs[n.ID] {
			if a.AllocatedResources == nil || (a.ClientStatus != api.AllocClientStatusPending && a.ClientStatus != api.AllocClientStatusRunning) {
				continue
			}
			for _, t := range a.AllocatedResources.Tasks {
				for _, d := range t.Devices {
					for _, id := range d.DeviceIDs {
						used[id] = true
					}
				}
			}
		}
		open := !n.Drain && n.SchedulingEligibility == api.NodeSchedulingEligible
		for _, d := range gpusOf(n) {
			c := out[d.Name]
			for _, in := range d.Instances {
				if in == nil || !in.Healthy {
					continue
				}
				c.Total++
				if open && !used[in.ID] {
					c.Free++
				}
			}
			out[d.Name] = c
		}
	}
	return out
}
