package fleet

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// RegisterMetrics adds the gauge thaw.instances{deploy_id, model, state}
// (state: running, starting, pending, draining) to mp; Unregister the
// registration when the fleet is dropped (a term of leadership ended).
func (f *Fleet) RegisterMetrics(mp metric.MeterProvider) (metric.Registration, error) {
	m := mp.Meter("github.com/thawhq/thaw/fleet")
	g, err := m.Int64ObservableGauge("thaw.instances", metric.WithDescription("Instances per deployment by state."))
	if err != nil {
		return nil, err
	}
	return m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for _, c := range f.Counts() {
			for state, n := range map[State]int{StateRunning: c.Ready, StateStarting: c.Starting, StatePending: c.Pending, StateDraining: c.Draining} {
				o.ObserveInt64(g, int64(n), metric.WithAttributes(
					attribute.String("deploy_id", c.DeployID), attribute.String("model", c.Model), attribute.String("state", string(state))))
			}
		}
		return nil
	}, g)
}
