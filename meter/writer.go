package meter

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// Ledger is what the Writer writes to: the Store.
type Ledger interface {
	Record(ctx context.Context, f Fact) error
	OpenIntervals(ctx context.Context) ([]Interval, error)
}

// History is the runtime's record of ended instances (fleet.History).
type History interface {
	// Ended reports when instance id freed its GPUs; ok is false while it
	// runs. An instance the runtime has no record of is an error for which
	// WriterConfig.Unknown is true.
	Ended(ctx context.Context, id string) (at time.Time, ok bool, err error)
}

// WriterConfig configures a Writer. Ledger is required.
type WriterConfig struct {
	Ledger Ledger
	// History, when set, closes the ledger's open intervals whose end thaw
	// did not see (it was down), from the runtime's record.
	History History
	// Unknown tells History's "no record of this instance" error.
	Unknown func(error) bool
	// CloseEvery is how often open intervals are checked against History.
	// Default 1 min; the first check runs at start.
	CloseEvery time.Duration
	// Leads, when set, says whether this process runs the fleet now (thaw
	// server's leader): only then are open intervals checked, so a
	// follower never closes, at "now", an interval whose exact end the
	// leader's fleet is about to write. Nil: always.
	Leads  func() bool
	Logger *slog.Logger
}

// Writer records facts in the ledger in the order they were added, off the
// caller's path: Add never blocks, and a fact the database could not take
// (it is down) is retried, in order, until it can. It is the meter's one
// writer, run by whoever runs the fleet.
type Writer struct {
	cfg  WriterConfig
	log  *slog.Logger
	q    *queue[Fact]
	gpu  *gpuTally     // GPU time of the facts added, for the metrics
	kick chan struct{} // CheckNow's signal to Run
}

// NewWriter returns a Writer; Run starts it.
func NewWriter(cfg WriterConfig) (*Writer, error) {
	if cfg.Ledger == nil {
		return nil, errors.New("meter: Writer needs a Ledger")
	}
	if cfg.CloseEvery <= 0 {
		cfg.CloseEvery = time.Minute
	}
	if cfg.Unknown == nil {
		cfg.Unknown = func(error) bool { return false }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Leads == nil {
		cfg.Leads = func() bool { return true }
	}
	return &Writer{cfg: cfg, log: cfg.Logger, q: newQueue[Fact](), gpu: newGPUTally(time.Now()), kick: make(chan struct{}, 1)}, nil
}

// Add queues f. It never blocks.
func (w *Writer) Add(f Fact) {
	w.gpu.add(f)
	w.q.push(f, 0)
}

// Pending is how many facts wait to be written.
func (w *Writer) Pending() int { return w.q.len() }

// Run writes queued facts until ctx is done, and closes intervals from
// History every CloseEvery. Facts still queued when ctx ends are written
// with a short grace, so a clean shutdown loses none.
func (w *Writer) Run(ctx context.Context) error {
	return w.q.run(ctx, w.cfg.CloseEvery, w.kick, w.drain, func(ctx context.Context) {
		w.drain(ctx)
		if w.cfg.Leads() {
			w.closeEnded(ctx)
		}
	})
}

// CheckNow asks Run to check the open intervals against History at once,
// after writing what is queued (a new leader: an instance that ended while
// no leader ran must not bill until the next minute's check). It never
// blocks.
func (w *Writer) CheckNow() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// drain writes the queue in order. A fact the database could not take
// stays at the head and is retried after a pause; one the ledger refuses
// for what it says (no held fact, dated before it) is logged and dropped.
func (w *Writer) drain(ctx context.Context) {
	w.q.drain(ctx, w.write)
}

// write records f; an error means "retry it".
func (w *Writer) write(ctx context.Context, f Fact) error {
	err := w.cfg.Ledger.Record(ctx, f)
	switch {
	case err == nil:
	case refused(err):
		w.log.Error("ledger refused a fact; dropped", "instance", f.InstanceID, "kind", f.Kind, "at", f.At, "err", err)
	default:
		w.log.Warn("ledger unavailable; will retry", "instance", f.InstanceID, "kind", f.Kind, "pending", w.Pending(), "err", err)
		return err
	}
	w.gpu.written(f)
	return nil
}

// refused tells an error about the fact itself from a database failure.
func refused(err error) bool {
	return errors.Is(err, ErrNoHeld) || errors.Is(err, ErrBeforeHeld) || errors.Is(err, ErrInvalidFact)
}

// closeEnded closes each open interval whose instance the runtime says has
// ended, at the runtime's time. An instance the runtime no longer knows at
// all (Nomad garbage-collected its allocation while thaw was down) is
// closed now, with a reason that says so: its GPUs are certainly free, and
// an interval left open would bill forever.
func (w *Writer) closeEnded(ctx context.Context) {
	if w.cfg.History == nil {
		return
	}
	open, err := w.cfg.Ledger.OpenIntervals(ctx)
	if err != nil {
		if ctx.Err() == nil {
			w.log.Warn("ledger: open intervals unavailable", "err", err)
		}
		return
	}
	for _, iv := range open {
		at, ended, err := w.cfg.History.Ended(ctx, iv.InstanceID)
		reason := "ended while thaw was not watching (from the runtime's record)"
		switch {
		case err != nil && w.cfg.Unknown(err):
			at, ended = time.Now(), true
			reason = "closed when found unknown to the runtime (its record was gone)"
			w.log.Warn("ledger: open interval of an instance the runtime does not know; closing it now", "instance", iv.InstanceID, "deploy", iv.DeployID)
		case err != nil:
			w.log.Warn("runtime history unavailable", "instance", iv.InstanceID, "err", err)
			continue
		}
		if !ended {
			continue
		}
		// The interval's start, for the GPU-seconds counter: with several
		// replicas it may have begun after this process did (held by
		// another leader), and must not count from the process's start.
		w.gpu.add(Fact{InstanceID: iv.InstanceID, DeployID: iv.DeployID, GPU: iv.GPU, NumGPUs: iv.NumGPUs,
			Kind: KindHeld, At: iv.Start})
		w.Add(Fact{InstanceID: iv.InstanceID, DeployID: iv.DeployID, Owner: iv.Owner, Model: iv.Model,
			GPU: iv.GPU, NumGPUs: iv.NumGPUs, Kind: KindReleased, At: at, Reason: reason})
	}
	w.drain(ctx)
}
