package meter_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/thawhq/thaw/internal/metrictest"
	"github.com/thawhq/thaw/meter"
)

// nopLedger takes every fact.
type nopLedger struct{}

func (nopLedger) Record(context.Context, meter.Fact) error { return nil }
func (nopLedger) OpenIntervals(context.Context) ([]meter.Interval, error) {
	return nil, nil
}

// gpuMetric collects thaw.gpu: deploy_id/gpu -> seconds.
func gpuMetric(t *testing.T, reader *sdkmetric.ManualReader) map[string]float64 {
	t.Helper()
	got := map[string]float64{}
	m, ok := metrictest.Find(t, reader, "thaw.gpu")
	if !ok {
		return got
	}
	if m.Unit != "s" {
		t.Errorf("thaw.gpu's unit is %q; want s (thaw_gpu_seconds_total in Prometheus)", m.Unit)
	}
	sum, ok := m.Data.(metricdata.Sum[float64])
	if !ok || !sum.IsMonotonic || sum.Temporality != metricdata.CumulativeTemporality {
		t.Fatalf("thaw.gpu is %T (%+v); want a cumulative monotonic float sum", m.Data, m.Data)
	}
	for _, p := range sum.DataPoints {
		d, _ := p.Attributes.Value("deploy_id")
		g, _ := p.Attributes.Value("gpu")
		got[d.AsString()+"/"+g.AsString()] = p.Value
	}
	return got
}

// TestGPUSecondsMetric steps through time in a bubble: the counter is the
// GPU time of the facts this process recorded since it started, open
// intervals up to the collection, and it never decreases.
func TestGPUSecondsMetric(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		t0 := time.Now()
		w, err := meter.NewWriter(meter.WriterConfig{Ledger: nopLedger{}})
		if err != nil {
			t.Fatal(err)
		}
		reader := sdkmetric.NewManualReader()
		if err := w.RegisterMetrics(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))); err != nil {
			t.Fatal(err)
		}
		held := func(id, deploy, gpu string, n int, at time.Time) meter.Fact {
			return meter.Fact{InstanceID: id, DeployID: deploy, Owner: "alice", Model: "alice/m", GPU: gpu, NumGPUs: n, Kind: meter.KindHeld, At: at}
		}
		released := func(id, deploy, gpu string, n int, at time.Time) meter.Fact {
			return meter.Fact{InstanceID: id, DeployID: deploy, Owner: "alice", Model: "alice/m", GPU: gpu, NumGPUs: n, Kind: meter.KindReleased, At: at, Reason: "stopped"}
		}
		check := func(step string, want map[string]float64) {
			t.Helper()
			if d := cmp.Diff(want, gpuMetric(t, reader)); d != "" {
				t.Errorf("%s: thaw.gpu (-want +got):\n%s", step, d)
			}
		}
		check("nothing held", map[string]float64{})

		// i1 ran before this process started (re-reported on adoption):
		// it counts from the start of the process.
		w.Add(held("i1", "d1", "A100-80GB", 2, t0.Add(-time.Hour)))
		w.Add(held("i2", "d1", "A100-80GB", 1, t0.Add(10*time.Second)))
		w.Add(held("i3", "d2", "H100", 1, t0.Add(20*time.Second)))
		w.Add(held("i1", "d1", "A100-80GB", 2, t0.Add(-time.Hour))) // a re-report adds nothing
		time.Sleep(60 * time.Second)
		check("open intervals up to now", map[string]float64{"d1/A100-80GB": 2*60 + 50, "d2/H100": 40})
		// The token counter asks who ran before this process.
		if at, ok := w.Held("i1"); !ok || !at.Equal(t0.Add(-time.Hour)) || !at.Before(w.Started()) {
			t.Errorf("Held(i1) = %v, %v; want the runtime's time, an hour before the writer started (%v)", at, ok, w.Started())
		}

		// i2 ended at 30 s by the runtime's record, reported at 60 s: the
		// counter holds until the ledger's value catches up.
		w.Add(released("i2", "d1", "A100-80GB", 1, t0.Add(30*time.Second)))
		check("a release dated before the last collection", map[string]float64{"d1/A100-80GB": 170, "d2/H100": 40})
		time.Sleep(10 * time.Second)
		check("10 s later: 2x70 + 20 is still under 170", map[string]float64{"d1/A100-80GB": 170, "d2/H100": 50})
		time.Sleep(10 * time.Second)
		check("20 s later: 2x80 + 20", map[string]float64{"d1/A100-80GB": 180, "d2/H100": 60})

		// The same release given twice (the fleet's and the one closeEnded
		// finds in the runtime's record) counts once; an instance held
		// before this process, whose held fact it never saw, counts from
		// the start of the process to its end.
		w.Add(released("i3", "d2", "H100", 1, t0.Add(80*time.Second)))
		w.Add(released("i3", "d2", "H100", 1, t0.Add(80*time.Second)))
		w.Add(released("i9", "d3", "L4", 4, t0.Add(5*time.Second)))
		w.Add(released("i8", "d3", "L4", 4, t0.Add(-time.Minute))) // ended before: nothing
		if _, ok := w.Held("i3"); ok {
			t.Error("Held(i3) after its release: still held")
		}
		time.Sleep(20 * time.Second)
		check("closed intervals", map[string]float64{"d1/A100-80GB": 2*100 + 20, "d2/H100": 60, "d3/L4": 20})

		if d := cmp.Diff([]meter.GPUSeconds{
			{DeployID: "d1", GPU: "A100-80GB", Seconds: 220}, {DeployID: "d2", GPU: "H100", Seconds: 60}, {DeployID: "d3", GPU: "L4", Seconds: 20},
		}, w.GPUSeconds(time.Now())); d != "" {
			t.Errorf("GPUSeconds (-want +got):\n%s", d)
		}
	})
}
