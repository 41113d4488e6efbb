package meter_test

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/thawhq/thaw/meter"
)

// openLedger is a ledger whose open intervals are given, until a released
// fact of them is recorded.
type openLedger struct {
	// mu guards open and released.
	mu       sync.Mutex
	open     []meter.Interval
	released map[string]time.Time
}

func (l *openLedger) Record(_ context.Context, f meter.Fact) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.released[f.InstanceID]; f.Kind == meter.KindReleased && !ok {
		l.released[f.InstanceID] = f.At
	}
	return nil
}

func (l *openLedger) OpenIntervals(context.Context) ([]meter.Interval, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []meter.Interval
	for _, iv := range l.open {
		if _, ok := l.released[iv.InstanceID]; !ok {
			out = append(out, iv)
		}
	}
	return out, nil
}

// endedAt is a runtime's record: every instance ended at the time given.
type endedAt map[string]time.Time

func (h endedAt) Ended(_ context.Context, id string) (time.Time, bool, error) {
	at, ok := h[id]
	return at, ok, nil
}

// TestWriterClosesFromHistory: a replica whose writer closes intervals it
// never saw begin (another replica led when they were held, or this
// process had not started) records each at the runtime's end time, and
// its GPU-seconds counter counts each from its start or the process's,
// whichever is later: not the whole life of a long-running replica.
func TestWriterClosesFromHistory(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		t0 := time.Now()
		iv := func(id string, start time.Time) meter.Interval {
			return meter.Interval{InstanceID: id, DeployID: "d1", Owner: "alice", Model: "alice/m", GPU: "A100-80GB", NumGPUs: 2, Start: start}
		}
		ledger := &openLedger{released: map[string]time.Time{}, open: []meter.Interval{
			iv("d1/i-late", t0.Add(30*time.Second)), // held by another replica after this one started
			iv("d1/i-old", t0.Add(-time.Hour)),      // held before this replica started
			iv("d1/i-runs", t0.Add(40*time.Second)), // still running
		}}
		history := endedAt{"d1/i-late": t0.Add(50 * time.Second), "d1/i-old": t0.Add(10 * time.Second)}
		w, err := meter.NewWriter(meter.WriterConfig{Ledger: ledger, History: history})
		if err != nil {
			t.Fatal(err)
		}
		reader := sdkmetric.NewManualReader()
		if err := w.RegisterMetrics(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Minute) // the replica has run for a minute when it checks
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- w.Run(ctx) }()
		synctest.Wait()

		ledger.mu.Lock()
		if d := cmp.Diff(map[string]time.Time{"d1/i-late": t0.Add(50 * time.Second), "d1/i-old": t0.Add(10 * time.Second)}, ledger.released); d != "" {
			t.Errorf("released facts (-want +got):\n%s", d)
		}
		ledger.mu.Unlock()
		// i-late: 20 s x 2 GPUs; i-old: from the writer's start, 10 s x 2;
		// i-runs is not this replica's to count.
		if d := cmp.Diff(map[string]float64{"d1/A100-80GB": 2*20 + 2*10}, gpuMetric(t, reader)); d != "" {
			t.Errorf("thaw.gpu (-want +got):\n%s", d)
		}
		if _, ok := w.Held("d1/i-late"); ok {
			t.Error("Held(d1/i-late) after its interval was closed: still held")
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// TestWriterClosesOnlyWhileLeading: a follower's writer never closes an
// interval from History (the leader's fleet may be about to write its exact
// end); once it leads, CheckNow closes at once what ended meanwhile, not at
// the next minute's check.
func TestWriterClosesOnlyWhileLeading(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		t0 := time.Now()
		ledger := &openLedger{released: map[string]time.Time{}, open: []meter.Interval{
			{InstanceID: "d1/i-1", DeployID: "d1", Owner: "alice", Model: "alice/m", GPU: "A100-80GB", NumGPUs: 1, Start: t0.Add(-time.Hour)},
		}}
		var leads sync.Mutex
		leading := false
		w, err := meter.NewWriter(meter.WriterConfig{Ledger: ledger, History: endedAt{"d1/i-1": t0.Add(-time.Minute)},
			Leads: func() bool { leads.Lock(); defer leads.Unlock(); return leading }})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		time.Sleep(3 * time.Minute) // three checks as a follower
		synctest.Wait()
		released := func() (time.Time, bool) {
			ledger.mu.Lock()
			defer ledger.mu.Unlock()
			at, ok := ledger.released["d1/i-1"]
			return at, ok
		}
		if at, ok := released(); ok {
			t.Fatalf("a follower closed the interval at %v", at)
		}
		leads.Lock()
		leading = true
		leads.Unlock()
		w.CheckNow()
		time.Sleep(time.Second)
		synctest.Wait()
		if at, ok := released(); !ok || !at.Equal(t0.Add(-time.Minute)) {
			t.Errorf("after CheckNow on the new leader: released %v, %v; want at the runtime's end %v", at, ok, t0.Add(-time.Minute))
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}
