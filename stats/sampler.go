package stats

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/thawhq/thaw/meter"
)

// Defaults of Config.
const (
	DefaultInterval   = 10 * time.Second
	DefaultRetention  = 7 * 24 * time.Hour
	DefaultPruneEvery = time.Hour
)

// Instances is a deployment's instances by state, as the fleet counts
// them.
type Instances struct {
	DeployID                             string
	Running, Starting, Pending, Draining int
}

// Demand is a deployment's held and in-flight requests.
type Demand struct{ Held, InFlight int }

// Store is where samples go: the meter's Store.
type Store interface {
	AddSamples(ctx context.Context, samples []meter.Sample) error
	PruneSamples(ctx context.Context, before time.Time) (int64, error)
}

// Config configures a Sampler. Store, Instances, Demand and Owner are
// required.
type Config struct {
	Store Store
	// Instances lists every deployment the fleet runs, with its instances
	// by state: the deployments sampled.
	Instances func() []Instances
	// Demand returns held and in-flight requests per deployment.
	Demand func(ctx context.Context) (map[string]Demand, error)
	// Owner returns a deployment's owner, "" when it is unknown (deleted):
	// it is then not sampled.
	Owner func(deployID string) string
	// Adopted reports whether an instance was held before this process
	// started: its first read is where counting starts, not all new. nil:
	// none was.
	Adopted func(instanceID string) bool
	// Interval between samples. Default DefaultInterval.
	Interval time.Duration
	// Retention is how long samples are kept. Default DefaultRetention.
	Retention time.Duration
	// PruneEvery is how often samples older than Retention are deleted.
	// Default DefaultPruneEvery.
	PruneEvery time.Duration
	Logger     *slog.Logger
}

// Sampler writes a sample of every deployment every Interval; Observe
// feeds it the model servers' counters.
type Sampler struct {
	cfg Config

	// mu guards last and acc.
	mu sync.Mutex
	// last is each instance's last good read; acc is what each
	// deployment's servers counted since the last sample.
	last map[string]meter.Scrape
	acc  map[string]counted
}

// counted is what a deployment's servers counted over some time.
type counted struct {
	c    meter.Counters
	ttft meter.Histogram
}

// New returns a Sampler; Run starts it.
func New(cfg Config) (*Sampler, error) {
	if cfg.Store == nil || cfg.Instances == nil || cfg.Demand == nil || cfg.Owner == nil {
		return nil, errors.New("stats: sampler needs Store, Instances, Demand and Owner")
	}
	if cfg.Interval < 0 || cfg.Retention < 0 || cfg.PruneEvery < 0 {
		return nil, errors.New("stats: negative interval, retention or prune period")
	}
	// Zero (checked above: not negative) means the default.
	cfg.Interval = cmp.Or(cfg.Interval, DefaultInterval)
	cfg.Retention = cmp.Or(cfg.Retention, DefaultRetention)
	cfg.PruneEvery = cmp.Or(cfg.PruneEvery, DefaultPruneEvery)
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	if cfg.Adopted == nil {
		cfg.Adopted = func(string) bool { return false }
	}
	return &Sampler{cfg: cfg, last: map[string]meter.Scrape{}, acc: map[string]counted{}}, nil
}

// Interval is the time between samples: the smallest step of a series.
func (s *Sampler) Interval() time.Duration { return s.cfg.Interval }

// Retention is how long samples are kept.
func (s *Sampler) Retention() time.Duration { return s.cfg.Retention }

// Observe takes one round of reads of the ready instances (the scraper's
// demand.RoundObserver hook) and adds what each deployment's servers
// counted since the previous round to its next sample.
func (s *Sampler) Observe(_ time.Time, round []meter.Scrape) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var deltas map[string]counted
	s.last, deltas = observeRound(s.last, round, s.cfg.Adopted)
	for id, d := range deltas {
		a := s.acc[id]
		s.acc[id] = counted{c: a.c.Plus(d.c), ttft: a.ttft.Add(d.ttft)}
	}
}

// observeRound is Observe's pure part: given the last good read of each
// instance and a round, it returns the reads to remember and what each
// deployment counted since (meter.Counted, as the TokenCounter counts:
// the first read of a new instance from its warm-up, of an adopted one
// nothing; meter.HistogramDelta). An instance not read this round keeps
// its last read; one missing from the round is forgotten. The first
// read's TTFT histogram counts from zero: it includes the warm-up's first
// token, which the server does not tell apart.
func observeRound(last map[string]meter.Scrape, round []meter.Scrape, adopted func(string) bool) (map[string]meter.Scrape, map[string]counted) {
	next := make(map[string]meter.Scrape, len(round))
	out := map[string]counted{}
	for _, r := range round {
		if r.InstanceID == "" {
			continue
		}
		prev, seen := last[r.InstanceID]
		if !r.OK {
			if seen {
				next[r.InstanceID] = prev
			}
			continue
		}
		next[r.InstanceID] = r
		d, ok := meter.Counted(prev, seen, r, !seen && adopted(r.InstanceID))
		if !ok {
			continue
		}
		a := out[r.DeployID]
		a.c = a.c.Plus(d)
		a.ttft = a.ttft.Add(meter.HistogramDelta(prev.TTFT, r.TTFT))
		out[r.DeployID] = a
	}
	return next, out
}

// Run samples every Interval and prunes every PruneEvery (and at start)
// until ctx is done. A failed sample or prune is logged: the series has a
// gap there.
func (s *Sampler) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	prev := time.Now()
	var pruned time.Time
	for {
		if now := time.Now(); now.Sub(pruned) >= s.cfg.PruneEvery {
			pruned = now
			if n, err := s.cfg.Store.PruneSamples(ctx, now.Add(-s.cfg.Retention)); err != nil && ctx.Err() == nil {
				s.cfg.Logger.Warn("stats: prune", "err", err)
			} else if n > 0 {
				s.cfg.Logger.Debug("stats: pruned samples", "samples", n)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			if err := s.sampleOnce(ctx, prev, now); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				s.cfg.Logger.Warn("stats: sample", "err", err)
				continue // the next sample spans this one's time too
			}
			prev = now
		}
	}
}

// sampleOnce writes one sample per deployment at now, with what was
// counted since prev.
func (s *Sampler) sampleOnce(ctx context.Context, prev, now time.Time) error {
	dem, err := s.cfg.Demand(ctx)
	if err != nil {
		return fmt.Errorf("read demand: %w", err)
	}
	s.mu.Lock()
	acc := s.acc
	s.acc = map[string]counted{}
	s.mu.Unlock()
	samples := build(now, now.Sub(prev), s.cfg.Instances(), dem, acc, s.cfg.Owner)
	if len(samples) == 0 {
		return nil
	}
	if err := s.cfg.Store.AddSamples(ctx, samples); err != nil {
		// The next sample, spanning this one's time too, counts these.
		s.mu.Lock()
		for id, a := range acc {
			b := s.acc[id]
			s.acc[id] = counted{c: a.c.Plus(b.c), ttft: a.ttft.Add(b.ttft)}
		}
		s.mu.Unlock()
		return fmt.Errorf("write %d samples: %w", len(samples), err)
	}
	return nil
}

// build returns the samples at now of the deployments with an owner, the
// counts over span. Pure but for owner.
func build(now time.Time, span time.Duration, insts []Instances, dem map[string]Demand, acc map[string]counted, owner func(string) string) []meter.Sample {
	out := make([]meter.Sample, 0, len(insts))
	for _, in := range insts {
		o := owner(in.DeployID)
		if o == "" {
			continue
		}
		d, a := dem[in.DeployID], acc[in.DeployID]
		sm := meter.Sample{DeployID: in.DeployID, Owner: o, At: now.UTC(),
			Counts: counts(in, d), Span: span.Seconds(),
			Requests: a.c.Requests, PromptTokens: a.c.PromptTokens, CompletionTokens: a.c.CompletionTokens}
		if a.ttft.Total() > 0 {
			sm.TTFT = &a.ttft
		}
		out = append(out, sm)
	}
	return out
}

// Live returns a deployment's sample now, without counts: its instances
// by state and held and in-flight requests (zeros for a deployment the
// fleet does not run yet).
func (s *Sampler) Live(ctx context.Context, deployID string, now time.Time) (meter.Sample, error) {
	dem, err := s.cfg.Demand(ctx)
	if err != nil {
		return meter.Sample{}, fmt.Errorf("stats: read demand: %w", err)
	}
	in := Instances{DeployID: deployID}
	for _, i := range s.cfg.Instances() {
		if i.DeployID == deployID {
			in = i
		}
	}
	return meter.Sample{DeployID: deployID, At: now.UTC(), Counts: counts(in, dem[deployID])}, nil
}

// counts is a deployment's instances by state and its held and in-flight
// requests.
func counts(in Instances, d Demand) meter.Counts {
	return meter.Counts{Running: in.Running, Starting: in.Starting, Pending: in.Pending, Draining: in.Draining,
		Held: d.Held, InFlight: d.InFlight}
}
