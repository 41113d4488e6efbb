package stats

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/internal/metertest"
	"github.com/thawhq/thaw/meter"
)

// ttft is a histogram over bounds 0.1, 1 with cumulative counts.
func ttft(counts ...uint64) meter.Histogram {
	return meter.Histogram{Bounds: []float64{0.1, 1}, Counts: counts}
}

func read(inst, deploy string, requests, tokens int64, h meter.Histogram) meter.Scrape {
	return meter.Scrape{InstanceID: inst, DeployID: deploy, OK: true,
		Counters: meter.Counters{Requests: requests, PromptTokens: 2 * tokens, CompletionTokens: tokens}, TTFT: h}
}

// warmedUp is r of an instance whose model server served thaw's warm-up
// (one request, 2 prompt tokens, 1 generated) before it was ready.
func warmedUp(r meter.Scrape) meter.Scrape {
	r.Baseline = meter.Counters{Requests: 1, PromptTokens: 2, CompletionTokens: 1}
	return r
}

func TestObserveRound(t *testing.T) {
	adopted := func(id string) bool { return id == "old" }
	last := map[string]meter.Scrape{
		"i1":      read("i1", "d1", 5, 50, ttft(1, 2, 3)),
		"gone":    read("gone", "d2", 9, 9, ttft(0, 0, 1)),
		"unread":  read("unread", "d2", 7, 7, meter.Histogram{}),
		"restart": read("restart", "d3", 100, 1000, ttft(10, 10, 10)),
	}
	round := []meter.Scrape{
		read("i1", "d1", 8, 80, ttft(2, 4, 5)),                               // +3 requests, +30 tokens, 1+1+0 first tokens
		read("new", "d1", 1, 1, ttft(0, 1, 1)),                               // a new server without a baseline counts from zero
		warmedUp(read("warm", "d4", 1, 1, ttft(0, 1, 1))),                    // served only thaw's warm-up: no request, its first token kept
		warmedUp(read("served", "d5", 3, 11, ttft(1, 2, 3))),                 // counts from its warm-up
		read("old", "d2", 50, 500, ttft(9, 9, 9)),                            // adopted: a baseline
		{InstanceID: "unread", DeployID: "d2"},                               // not read: keeps its last read
		read("restart", "d3", 2, 20, ttft(1, 1, 1)),                          // lower: restarted, all new
		{DeployID: "d9", OK: true, Counters: meter.Counters{Requests: 1000}}, // no instance ID: ignored
	}
	next, got := observeRound(last, round, adopted)
	want := map[string]counted{
		"d1": {c: meter.Counters{Requests: 4, PromptTokens: 62, CompletionTokens: 31}, ttft: ttft(1, 3, 3)},
		"d3": {c: meter.Counters{Requests: 2, PromptTokens: 40, CompletionTokens: 20}, ttft: ttft(1, 1, 1)},
		"d4": {ttft: ttft(0, 1, 1)},
		"d5": {c: meter.Counters{Requests: 2, PromptTokens: 20, CompletionTokens: 10}, ttft: ttft(1, 2, 3)},
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(counted{})); diff != "" {
		t.Errorf("counted per deployment (-want +got):\n%s", diff)
	}
	wantNext := map[string]meter.Scrape{
		"i1": round[0], "new": round[1], "warm": round[2], "served": round[3], "old": round[4], "unread": last["unread"], "restart": round[6],
	}
	if diff := cmp.Diff(wantNext, next); diff != "" {
		t.Errorf("reads remembered (-want +got):\n%s", diff)
	}
}

// fakeStore is the sampler's database.
type fakeStore struct{ metertest.Rows[meter.Sample] }

func (f *fakeStore) AddSamples(_ context.Context, s []meter.Sample) error { return f.Add(s...) }

func (f *fakeStore) PruneSamples(_ context.Context, before time.Time) (int64, error) {
	return f.Purge(before)
}

// TestSamplerRun steps a sampler through time: a sample per deployment
// every interval with what was observed since the previous one, no sample
// (and nothing lost) while demand or the database fail, none for a
// deployment with no owner, and a prune at start and every PruneEvery.
func TestSamplerRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &fakeStore{}
		var mu sync.Mutex // guards demandErr
		var demandErr error
		s, err := New(Config{
			Store: store, Interval: 10 * time.Second, Retention: time.Hour, PruneEvery: 30 * time.Second,
			Instances: func() []Instances {
				return []Instances{{DeployID: "d1", Running: 1, Pending: 1}, {DeployID: "deleted", Running: 1}}
			},
			Demand: func(context.Context) (map[string]Demand, error) {
				mu.Lock()
				defer mu.Unlock()
				return map[string]Demand{"d1": {Held: 2, InFlight: 3}}, demandErr
			},
			Owner: func(id string) string {
				if id == "d1" {
					return "alice"
				}
				return ""
			},
			Logger: slog.New(slog.DiscardHandler),
		})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- s.Run(ctx) }()
		synctest.Wait()
		if _, prunes := store.Take(); len(prunes) != 1 || !prunes[0].Equal(start.Add(-time.Hour)) {
			t.Errorf("prunes at start = %v, want one before %v", prunes, start.Add(-time.Hour))
		}

		sample := func(at time.Duration, requests, tokens int64, h *meter.Histogram, span time.Duration) meter.Sample {
			return meter.Sample{DeployID: "d1", Owner: "alice", At: start.Add(at).UTC(),
				Counts: meter.Counts{Running: 1, Pending: 1, Held: 2, InFlight: 3}, Span: span.Seconds(), Requests: requests, PromptTokens: 2 * tokens,
				CompletionTokens: tokens, TTFT: h}
		}
		var prunes []time.Time
		step := func(observe []meter.Scrape, want ...meter.Sample) {
			t.Helper()
			if observe != nil {
				s.Observe(time.Now(), observe)
			}
			time.Sleep(10 * time.Second)
			synctest.Wait()
			got, p := store.Take()
			prunes = append(prunes, p...)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("samples at %v (-want +got):\n%s", time.Since(start), diff)
			}
		}
		// A new instance: all it counted is new.
		step([]meter.Scrape{read("i1", "d1", 2, 10, ttft(1, 2, 2))},
			sample(10*time.Second, 2, 10, new(ttft(1, 2, 2)), 10*time.Second))
		// Nothing new: a sample of zeros, no histogram.
		step(nil, sample(20*time.Second, 0, 0, nil, 10*time.Second))
		// Demand unreadable: no sample; the next spans both intervals.
		mu.Lock()
		demandErr = errors.New("redis down")
		mu.Unlock()
		step([]meter.Scrape{read("i1", "d1", 3, 15, ttft(1, 2, 2))})
		mu.Lock()
		demandErr = nil
		mu.Unlock()
		step([]meter.Scrape{read("i1", "d1", 4, 20, ttft(1, 3, 3))},
			sample(40*time.Second, 2, 10, new(ttft(0, 1, 1)), 20*time.Second))
		// The database down: the counts wait for the next sample.
		store.SetFailing(true)
		step([]meter.Scrape{read("i1", "d1", 5, 25, ttft(1, 3, 3))})
		store.SetFailing(false)
		step([]meter.Scrape{read("i1", "d1", 6, 30, ttft(1, 3, 3))},
			sample(60*time.Second, 2, 10, nil, 20*time.Second))

		// Pruned every 30s: samples older than the retention go.
		wantPrunes := []time.Time{start.Add(30*time.Second - time.Hour), start.Add(60*time.Second - time.Hour)}
		if diff := cmp.Diff(wantPrunes, prunes); diff != "" {
			t.Errorf("prunes after the start (-want +got):\n%s", diff)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	})
}

func TestSamplerLive(t *testing.T) {
	s, err := New(Config{Store: &fakeStore{},
		Instances: func() []Instances {
			return []Instances{{DeployID: "d1", Running: 2, Starting: 1, Draining: 1}, {DeployID: "d2", Pending: 3}}
		},
		Demand: func(context.Context) (map[string]Demand, error) {
			return map[string]Demand{"d1": {Held: 4, InFlight: 5}}, nil
		},
		Owner: func(string) string { return "alice" },
	})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		id   string
		want meter.Sample
	}{
		{"d1", meter.Sample{DeployID: "d1", At: now, Counts: meter.Counts{Running: 2, Starting: 1, Draining: 1, Held: 4, InFlight: 5}}},
		{"d2", meter.Sample{DeployID: "d2", At: now, Counts: meter.Counts{Pending: 3}}},
		{"new", meter.Sample{DeployID: "new", At: now}},
	} {
		got, err := s.Live(context.Background(), c.id, now)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(c.want, got); diff != "" {
			t.Errorf("Live(%s) (-want +got):\n%s", c.id, diff)
		}
	}
}
