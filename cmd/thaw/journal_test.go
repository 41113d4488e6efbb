package main

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/autoscaler"
	"github.com/thawhq/thaw/fleet"
	"github.com/thawhq/thaw/meter"
)

// TestJournalEvents: what the owner reads of each fleet event and scale
// decision (type, message, detail), the contract of the events feed.
func TestJournalEvents(t *testing.T) {
	at := time.Date(2026, 11, 18, 12, 0, 0, 0, time.UTC)
	ev := func(k fleet.EventKind, reason string, cold time.Duration, adopted bool) fleet.Event {
		return fleet.Event{Kind: k, DeployID: "d1", Owner: "alice", InstanceID: "i1", At: at, Reason: reason, ColdStart: cold, Adopted: adopted}
	}
	tests := []struct {
		in                  meter.Event
		typ, msg, detailStr string
	}{
		{fleetEvent(ev(fleet.EventPlaced, "", 0, false)), meter.EventInstancePlaced,
			"instance i1 placed: its GPUs are held from now on", `{"instance_id":"i1"}`},
		{fleetEvent(ev(fleet.EventPlaced, "", 0, true)), meter.EventInstancePlaced,
			"instance i1 adopted: it was running before thaw started", `{"adopted":true,"instance_id":"i1"}`},
		{fleetEvent(fleet.Event{Kind: fleet.EventPending, DeployID: "d1", Owner: "alice", At: at, Reason: "no free A100-80GB GPU"}),
			meter.EventInstancePending, "instances not placed: no free A100-80GB GPU", `{"reason":"no free A100-80GB GPU"}`},
		{fleetEvent(ev(fleet.EventReady, "", 2345678*time.Microsecond, false)), meter.EventInstanceReady,
			"instance i1 ready after 2.3s", `{"cold_start_seconds":2.346,"instance_id":"i1"}`},
		{fleetEvent(ev(fleet.EventReady, "", 0, true)), meter.EventInstanceReady,
			"instance i1 ready (adopted)", `{"instance_id":"i1"}`},
		{fleetEvent(ev(fleet.EventStopped, "start timeout: not ready within 30m0s", 0, false)), meter.EventInstanceStopped,
			"instance i1 stopped: start timeout: not ready within 30m0s", `{"instance_id":"i1","reason":"start timeout: not ready within 30m0s"}`},
		{fleetEvent(ev(fleet.EventFailed, "exit status 1", 0, false)), meter.EventInstanceFailed,
			"instance i1 failed: exit status 1", `{"instance_id":"i1","reason":"exit status 1"}`},
		{fleetEvent(fleet.Event{Kind: fleet.EventDeploymentFailed, DeployID: "d1", Owner: "alice", At: at, Reason: "exit status 1"}),
			meter.EventDeploymentFailed, "deployment failed: its instances keep failing before they get ready (exit status 1); no more are started until it is updated",
			`{"reason":"exit status 1"}`},
		{scaleEvent("alice", autoscaler.Scale{DeployID: "d1", From: 0, To: 1, Reason: "wake: 3 requests need 1 x 8", At: at}),
			meter.EventScale, "scaled 0 -> 1: wake: 3 requests need 1 x 8", `{"from":0,"reason":"wake: 3 requests need 1 x 8","to":1}`},
	}
	for _, tt := range tests {
		want := meter.Event{Owner: "alice", DeployID: "d1", At: at, Type: tt.typ, Message: tt.msg, Detail: []byte(tt.detailStr)}
		if d := cmp.Diff(want, tt.in); d != "" {
			t.Errorf("%s (-want +got):\n%s", tt.typ, d)
		}
	}
}
