package fleet

import (
	"fmt"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/google/go-cmp/cmp"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/thawhq/thaw/internal/metrictest"
)

func TestInstanceState(t *testing.T) {
	tests := []struct {
		name string
		in   inst
		want State
	}{
		{"just asked of the runtime", inst{phase: PhasePending}, StateStarting},
		{"placed, no address yet (Nomad)", inst{phase: PhasePending, reason: ""}, StateStarting},
		{"not placed", inst{phase: PhasePending, reason: "no free A100-80GB GPU"}, StatePending},
		{"running, model loading", inst{phase: PhaseRunning, addr: "10.0.0.1:8000"}, StateStarting},
		{"ready", inst{phase: PhaseRunning, ready: true}, StateRunning},
		{"ready and draining", inst{phase: PhaseRunning, ready: true, draining: true}, StateDraining},
		{"not ready and leaving", inst{phase: PhasePending, reason: "no GPU", draining: true}, StateDraining},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.in.state(); got != tt.want {
				t.Errorf("state() = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestStatusAndMetricsAgree: what the deploy API shows (Fleet.Live) and
// thaw_instances classify each instance the same way, a just-started one
// included.
func TestStatusAndMetricsAgree(t *testing.T) {
	tests := []struct {
		name  string
		event *Instance // the runtime's report, nil for none yet
		want  State
	}{
		{"just started", nil, StateStarting},
		{"placed, no address yet", &Instance{Phase: PhasePending}, StateStarting},
		{"not placed", &Instance{Phase: PhasePending, Reason: "no free A100-80GB GPU: 8 of 8 in use"}, StatePending},
		{"loading weights", &Instance{Phase: PhaseRunning, Addr: "10.0.0.9:8000"}, StateStarting},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				d := newDeployment("d1", "alice", "m", 1, 1, 1)
				h := startFleet(t, Config{}, d)
				reader := sdkmetric.NewManualReader()
				if _, err := h.f.RegisterMetrics(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))); err != nil {
					t.Fatal(err)
				}
				id := h.waitStarted("d1", 1)[0]
				if tt.event != nil {
					ev := *tt.event
					ev.ID, ev.DeployID = id, "d1"
					h.rt.emit(ev)
				}
				settle(0)

				want := map[State]int{StateRunning: 0, StateStarting: 0, StatePending: 0, StateDraining: 0}
				want[tt.want] = 1
				if diff := cmp.Diff(want, instancesMetric(t, reader, "d1")); diff != "" {
					t.Errorf("thaw_instances (-want +got):\n%s", diff)
				}
				if diff := cmp.Diff(want, statesInLive(h.live(d).Instances.Reason)); diff != "" {
					t.Errorf("states the API's reason %q names (-want +got):\n%s", h.live(d).Instances.Reason, diff)
				}
			})
		})
	}
}

// instancesMetric collects thaw.instances of deployID by state.
func instancesMetric(t *testing.T, reader *sdkmetric.ManualReader, deployID string) map[State]int {
	t.Helper()
	m, _ := metrictest.Find(t, reader, "thaw.instances")
	g, _ := m.Data.(metricdata.Gauge[int64])
	got := map[State]int{}
	for _, p := range g.DataPoints {
		if v, _ := p.Attributes.Value("deploy_id"); v.AsString() != deployID {
			continue
		}
		state, _ := p.Attributes.Value("state")
		got[State(state.AsString())] = int(p.Value)
	}
	return got
}

// statesInLive reads the instance counts the API's instances.reason names
// for pending ("not placed") and starting instances, and none for the rest.
func statesInLive(reason string) map[State]int {
	got := map[State]int{StateRunning: 0, StateStarting: 0, StatePending: 0, StateDraining: 0}
	for _, part := range strings.Split(reason, "; ") {
		var n int
		switch {
		case strings.Contains(part, "instance(s) starting"):
			fmt.Sscanf(part, "%d", &n)
			got[StateStarting] = n
		case strings.Contains(part, "instance(s) not placed"):
			fmt.Sscanf(part, "%d", &n)
			got[StatePending] = n
		}
	}
	return got
}
