package meter

// GPU time as a Prometheus counter: thaw_gpu_seconds_total.

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// GPUSeconds is the GPU time of one deployment on one GPU type: seconds
// held times the number of GPUs.
type GPUSeconds struct {
	DeployID, GPU string
	Seconds       float64
}

// gpuTally sums the GPU time of the facts a Writer is given, from since
// (when the Writer was made) on, without reading the ledger: the
// intervals closed since then plus the open ones up to now. An instance
// held before since counts from since; one whose held fact this process
// never saw and whose end it found in the runtime's record (held before
// thaw started, or by another replica's term) counts from its start or
// since, whichever is later, to its end; with a released fact alone, from
// since.
type gpuTally struct {
	since time.Time

	// mu guards open, closed, ended and shown.
	mu     sync.Mutex
	open   map[string]Fact // instance ID -> its held fact
	closed map[gpuKey]float64
	// shown is the last value at returned: a counter never decreases, and
	// an open instance counted up to a collection can end before it (its
	// released fact carries the runtime's time, which can lag).
	shown map[gpuKey]float64
	// ended holds the instances whose released fact was counted and is
	// not in the ledger yet: the Writer may be given it again (closeEnded
	// lists the ledger's open intervals), and it must count once.
	ended map[string]bool
}

type gpuKey struct{ deployID, gpu string }

func newGPUTally(since time.Time) *gpuTally {
	return &gpuTally{since: since, open: map[string]Fact{}, closed: map[gpuKey]float64{},
		ended: map[string]bool{}, shown: map[gpuKey]float64{}}
}

// add counts f.
func (t *gpuTally) add(f Fact) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch f.Kind {
	case KindHeld:
		if _, ok := t.open[f.InstanceID]; ok || t.ended[f.InstanceID] {
			return // a re-report: the first one stands, as in the ledger
		}
		t.open[f.InstanceID] = f
	case KindReleased:
		if t.ended[f.InstanceID] {
			return
		}
		t.ended[f.InstanceID] = true
		start, key, n := t.since, gpuKey{f.DeployID, f.GPU}, f.NumGPUs
		if held, ok := t.open[f.InstanceID]; ok {
			start, key, n = maxTime(held.At, t.since), gpuKey{held.DeployID, held.GPU}, held.NumGPUs
			delete(t.open, f.InstanceID)
		}
		if f.At.After(start) {
			t.closed[key] += f.At.Sub(start).Seconds() * float64(n)
		}
	}
}

// written forgets a released fact the ledger has now (or refused): the
// ledger's open intervals no longer list it.
func (t *gpuTally) written(f Fact) {
	if f.Kind != KindReleased {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.ended, f.InstanceID)
}

// at returns the GPU time counted up to now, ordered by deployment and GPU,
// never less than it returned before.
func (t *gpuTally) at(now time.Time) []GPUSeconds {
	t.mu.Lock()
	sums := make(map[gpuKey]float64, len(t.closed)+len(t.open))
	for k, v := range t.closed {
		sums[k] = v
	}
	for _, h := range t.open {
		sums[gpuKey{h.DeployID, h.GPU}] += max(0, now.Sub(maxTime(h.At, t.since)).Seconds()) * float64(h.NumGPUs)
	}
	for k, v := range sums {
		sums[k] = max(v, t.shown[k])
		t.shown[k] = sums[k]
	}
	t.mu.Unlock()
	out := make([]GPUSeconds, 0, len(sums))
	for k, v := range sums {
		out = append(out, GPUSeconds{DeployID: k.deployID, GPU: k.gpu, Seconds: v})
	}
	slices.SortFunc(out, func(a, b GPUSeconds) int {
		return cmp.Or(cmp.Compare(a.DeployID, b.DeployID), cmp.Compare(a.GPU, b.GPU))
	})
	return out
}

// held returns when instance id's GPUs were held, by the runtime's record,
// while it is held.
func (t *gpuTally) held(id string) (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f, ok := t.open[id]
	return f.At, ok
}

// Held reports when instance id's GPUs were held, by the runtime's own
// record, if a held fact of it was given to w and no released one: an
// instance held before w was made ran before this process started.
func (w *Writer) Held(id string) (time.Time, bool) { return w.gpu.held(id) }

// Started is when w was made: GPUSeconds counts from it.
func (w *Writer) Started() time.Time { return w.gpu.since }

// GPUSeconds returns the GPU time of the facts given to w since it was
// made, per deployment and GPU type: the intervals closed since, and the
// open ones up to now. It never reads the ledger.
func (w *Writer) GPUSeconds(now time.Time) []GPUSeconds { return w.gpu.at(now) }

// RegisterMetrics adds the counter thaw.gpu{deploy_id, gpu}, in seconds
// (thaw_gpu_seconds_total in Prometheus), to mp: GPU-seconds held since
// this process started (GPUSeconds at each collection), so it starts from
// zero at a restart, as a Prometheus counter may. The ledger has the whole
// history.
func (w *Writer) RegisterMetrics(mp metric.MeterProvider) error {
	m := mp.Meter("github.com/thawhq/thaw/meter")
	c, err := m.Float64ObservableCounter("thaw.gpu", metric.WithUnit("s"),
		metric.WithDescription("GPU-seconds held by each deployment's instances (seconds x GPUs) since this process started, by GPU type."))
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for _, g := range w.GPUSeconds(time.Now()) {
			o.ObserveFloat64(c, g.Seconds, metric.WithAttributes(
				attribute.String("deploy_id", g.DeployID), attribute.String("gpu", g.GPU)))
		}
		return nil
	}, c)
	return err
}
