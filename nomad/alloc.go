package nomad

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/thawhq/thaw/jobs"
)

// allocView is what the runtime needs of an allocation, from an event's
// *api.Allocation or a listing's *api.AllocationListStub.
type allocView struct {
	ID, JobID, TaskGroup, NodeName string
	DesiredStatus, ClientStatus    string
	DesiredDescription             string
	ClientDescription              string
	// Addr is host:port of the model server's port, "" when unknown.
	Addr        string
	TaskStates  map[string]*api.TaskState
	CreateIndex uint64
	ModifyIndex uint64
	// CreateTime and ModifyTime are Nomad's, in Unix nanoseconds: when the
	// allocation was placed (its GPUs reserved) and last changed.
	CreateTime, ModifyTime int64
}

func viewOfAlloc(a *api.Allocation) allocView {
	// Stub copies every field the view reads but the resources; it also
	// dereferences the job's type and version, which an event may leave
	// unset: the view needs nothing of the job.
	c := *a
	c.Job = nil
	v := viewOfStub(c.Stub())
	v.Addr = addrOf(a.AllocatedResources)
	return v
}

func viewOfStub(a *api.AllocationListStub) allocView {
	return allocView{
		ID: a.ID, JobID: a.JobID, TaskGroup: a.TaskGroup, NodeName: a.NodeName,
		DesiredStatus: a.DesiredStatus, ClientStatus: a.ClientStatus,
		DesiredDescription: a.DesiredDescription, ClientDescription: a.ClientDescription,
		Addr: addrOf(a.AllocatedResources), TaskStates: a.TaskStates,
		CreateIndex: a.CreateIndex, ModifyIndex: a.ModifyIndex,
		CreateTime: a.CreateTime, ModifyTime: a.ModifyTime,
	}
}

// addrOf returns host:port of the group's jobs.PortLabel port.
func addrOf(r *api.AllocatedResources) string {
	if r == nil {
		return ""
	}
	for _, p := range r.Shared.Ports {
		if p.Label == jobs.PortLabel && p.Value > 0 {
			return net.JoinHostPort(p.HostIP, strconv.Itoa(p.Value))
		}
	}
	for _, n := range r.Shared.Networks {
		for _, p := range n.DynamicPorts {
			if p.Label == jobs.PortLabel && p.Value > 0 {
				return net.JoinHostPort(n.IP, strconv.Itoa(p.Value))
			}
		}
	}
	return ""
}

// terminal reports whether the allocation is over: its resources are free.
func (a allocView) terminal() bool {
	switch a.ClientStatus {
	case api.AllocClientStatusComplete, api.AllocClientStatusFailed, api.AllocClientStatusLost:
		return true
	}
	return false
}

// held is when the allocation took its GPUs: its placement, Nomad's
// CreateTime (the plan that placed it reserved the devices on the node).
// Zero when the view does not carry it.
func (a allocView) held() time.Time {
	if a.CreateTime == 0 {
		return time.Time{}
	}
	return time.Unix(0, a.CreateTime)
}

// released is when a terminal allocation freed its GPUs: the latest
// FinishedAt of its tasks (the client recorded when each task process
// exited), else Nomad's ModifyTime (a task that never ran, a lost node:
// when the servers marked the allocation terminal). Zero for an allocation
// that is not terminal. Pure.
func (a allocView) released() time.Time {
	if !a.terminal() {
		return time.Time{}
	}
	var last time.Time
	for _, ts := range a.TaskStates {
		if ts != nil && ts.FinishedAt.After(last) {
			last = ts.FinishedAt
		}
	}
	if last.IsZero() && a.ModifyTime != 0 {
		last = time.Unix(0, a.ModifyTime)
	}
	return last
}

// causes are the task event types that say why a task ended.
var causes = map[string]bool{
	api.TaskTerminated: true, api.TaskDriverFailure: true, api.TaskSetupFailure: true,
	api.TaskFailedValidation: true, api.TaskArtifactDownloadFailed: true, "Template": true,
}

// failReason explains an allocation that ended without thaw asking: the
// last task event that says why (driver failure, exit code, ...), else
// Nomad's descriptions. Pure.
func failReason(a allocView) string {
	var why string
	if ts := a.TaskStates[jobs.TaskName]; ts != nil {
		for _, ev := range slices.Backward(ts.Events) {
			msg := ev.DisplayMessage
			if msg == "" {
				msg = ev.Message
			}
			if msg != "" && causes[ev.Type] {
				why = ev.Type + ": " + msg
				break
			}
		}
		if ts.Restarts > 0 {
			why = strings.TrimSpace(fmt.Sprintf("%s (restarted %d times)", why, ts.Restarts))
		}
	}
	switch {
	case a.ClientStatus == api.AllocClientStatusLost:
		return "Nomad lost the node running the instance" + suffix(a.NodeName)
	case why != "":
		return "model server failed: " + why
	case a.DesiredDescription != "":
		return "stopped by Nomad: " + a.DesiredDescription
	case a.ClientDescription != "":
		return "model server ended: " + a.ClientDescription
	}
	return "model server ended (Nomad allocation " + a.ClientStatus + ")"
}

func suffix(node string) string {
	if node == "" {
		return ""
	}
	return " (" + node + ")"
}
