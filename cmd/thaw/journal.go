package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/thawhq/thaw/api"
	"github.com/thawhq/thaw/autoscaler"
	"github.com/thawhq/thaw/fleet"
	"github.com/thawhq/thaw/meter"
)

// newJournal builds the deployments' events journal over the ledger: the
// fleet's lifecycle events, the autoscaler's decisions and the API's
// changes go to it (GET /deploy/{id}/events reads them). Events older than
// meter.DefaultEventRetention (30 days) are deleted, once an hour.
func (c *controlPlane) newJournal(p *process) error {
	var err error
	c.journal, err = meter.NewJournal(meter.JournalConfig{Store: c.metering.store, Logger: p.Log})
	return err
}

// deployJournal is what the API reads and records deployments' events
// with: the journal records, the ledger reads back.
type deployJournal struct {
	journal *meter.Journal
	store   *meter.Store
}

func (j deployJournal) Record(e meter.Event) { j.journal.Record(e) }

func (j deployJournal) DeployEvents(ctx context.Context, q meter.EventQuery) ([]meter.Event, error) {
	return j.store.DeployEvents(ctx, q)
}

// fleetInstances lists the fleet's instances for the API.
type fleetInstances struct{ f *fleet.Fleet }

func (l fleetInstances) Instances(deployID string) []api.InstanceView {
	var out []api.InstanceView
	for _, in := range l.f.Instances(deployID) {
		v := api.InstanceView{ID: in.ID, State: string(in.State), Since: in.Since.UTC(), Reason: in.Reason}
		if !in.ReadyAt.IsZero() {
			t := in.ReadyAt.UTC()
			v.ReadyAt = &t
		}
		out = append(out, v)
	}
	return out
}

// scaleEvent is the journal's event for an autoscaler decision about a
// deployment of owner.
func scaleEvent(owner string, s autoscaler.Scale) meter.Event {
	return journalEvent(owner, s.DeployID, s.At, meter.EventScale,
		fmt.Sprintf("scaled %d -> %d: %s", s.From, s.To, s.Reason),
		map[string]any{"from": s.From, "to": s.To, "reason": s.Reason})
}

// fleetEvent is the journal's event for a fleet lifecycle event.
func fleetEvent(e fleet.Event) meter.Event {
	inst := map[string]any{"instance_id": e.InstanceID}
	var typ, msg string
	var detail map[string]any
	switch e.Kind {
	case fleet.EventPlaced:
		typ, detail = meter.EventInstancePlaced, inst
		msg = fmt.Sprintf("instance %s placed: its GPUs are held from now on", e.InstanceID)
		if e.Adopted {
			detail["adopted"] = true
			msg = fmt.Sprintf("instance %s adopted: it was running before thaw started", e.InstanceID)
		}
	case fleet.EventPending:
		typ, detail = meter.EventInstancePending, map[string]any{"reason": e.Reason}
		msg = "instances not placed: " + e.Reason
	case fleet.EventReady:
		typ, detail = meter.EventInstanceReady, inst
		msg = fmt.Sprintf("instance %s ready (adopted)", e.InstanceID)
		if !e.Adopted {
			secs := e.ColdStart.Round(time.Millisecond).Seconds()
			detail["cold_start_seconds"] = secs
			msg = fmt.Sprintf("instance %s ready after %.1fs", e.InstanceID, secs)
		}
	case fleet.EventStopped:
		typ, detail = meter.EventInstanceStopped, inst
		detail["reason"] = e.Reason
		msg = fmt.Sprintf("instance %s stopped: %s", e.InstanceID, e.Reason)
	case fleet.EventFailed:
		typ, detail = meter.EventInstanceFailed, inst
		detail["reason"] = e.Reason
		msg = fmt.Sprintf("instance %s failed: %s", e.InstanceID, e.Reason)
	case fleet.EventDeploymentFailed:
		typ, detail = meter.EventDeploymentFailed, map[string]any{"reason": e.Reason}
		msg = "deployment failed: its instances keep failing before they get ready (" + e.Reason +
			"); no more are started until it is updated"
	default:
		typ, msg = "instance."+string(e.Kind), string(e.Kind)
	}
	return journalEvent(e.Owner, e.DeployID, e.At, typ, msg, detail)
}

// journalEvent builds an event with its detail encoded.
func journalEvent(owner, deployID string, at time.Time, typ, msg string, detail map[string]any) meter.Event {
	b, _ := json.Marshal(detail) // a map of strings, numbers and bools
	return meter.Event{Owner: owner, DeployID: deployID, At: at, Type: typ, Message: msg, Detail: b}
}

// configureJournal sets the API's Journal and Instances.
func (c *controlPlane) configureJournal(cfg *api.Config) {
	cfg.Journal = deployJournal{journal: c.journal, store: c.metering.store}
	cfg.Instances = replicaView{c}
}

// recordScale records an autoscaler decision; one about a deployment gone
// meanwhile is not recorded (no owner to show it to).
func (c *controlPlane) recordScale(s autoscaler.Scale) {
	d, err := c.cfg.Store.Get(s.DeployID)
	if err != nil {
		return
	}
	c.journal.Record(scaleEvent(d.Owner, s))
}
