package meter_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/meter"
)

// TestStoreSamples runs the samples' store cases on each database, as
// TestStore does.
func TestStoreSamples(t *testing.T) {
	runOnDatabases(t, "stats", []storeCase{
		{"samples", testSamples},
		{"cold starts", testColdStarts},
	})
}

func testSamples(t *testing.T, url string) {
	ctx := context.Background()
	s := open(t, url)
	at := func(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }
	ttft := meter.Histogram{Bounds: []float64{0.1, 1}, Counts: []uint64{1, 2, 2}}
	samples := []meter.Sample{
		{DeployID: "d1", Owner: "alice", At: at(0), Counts: meter.Counts{Running: 1}, Span: 10},
		{DeployID: "d1", Owner: "alice", At: at(10),
			Counts: meter.Counts{Running: 1, Starting: 1, Pending: 2, Draining: 1, Held: 3, InFlight: 4}, Span: 10, Requests: 5, PromptTokens: 6, CompletionTokens: 7, TTFT: &ttft},
		{DeployID: "d1", Owner: "alice", At: at(20), Counts: meter.Counts{Running: 1}, Span: 10},
		{DeployID: "d2", Owner: "bob", At: at(10), Counts: meter.Counts{InFlight: 1}, Span: 10},
	}
	if err := s.AddSamples(ctx, samples); err != nil {
		t.Fatal(err)
	}
	// Another writer's sample at the same time changes nothing.
	if err := s.AddSamples(ctx, []meter.Sample{{DeployID: "d1", Owner: "alice", At: at(10), Counts: meter.Counts{Running: 9}}}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Samples(ctx, "d1", at(5), at(20))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(samples[1:2], got); diff != "" {
		t.Errorf("Samples of d1 in [5s, 20s) (-want +got):\n%s", diff)
	}

	last, ok, err := s.LastActive(ctx, "d1")
	if err != nil || !ok || !last.Equal(at(10)) {
		t.Errorf("LastActive(d1) = %v, %v, %v; want %v (its only active sample)", last, ok, err, at(10))
	}
	if _, ok, err := s.LastActive(ctx, "none"); ok || err != nil {
		t.Errorf("LastActive(none) = _, %v, %v; want no sample", ok, err)
	}

	n, err := s.PruneSamples(ctx, at(10))
	if err != nil || n != 1 {
		t.Errorf("PruneSamples(before 10s) = %d, %v; want 1 (d1 at 0s)", n, err)
	}
	got, err = s.Samples(ctx, "d1", at(-60), at(60))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !got[0].At.Equal(at(10)) {
		t.Errorf("after the prune, d1's samples = %+v, want those at 10s and 20s", got)
	}
	if err := s.AddSamples(ctx, []meter.Sample{{Owner: "x", At: at(1)}}); err == nil {
		t.Error("AddSamples of a sample without a deployment: no error")
	}
}

func testColdStarts(t *testing.T, url string) {
	ctx := context.Background()
	s := open(t, url)
	at := func(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }
	record(t, s,
		held("i1", "d1", "alice", at(0)), fact("i1", meter.KindReady, at(3), ""),
		held("i2", "d1", "alice", at(5)), fact("i2", meter.KindReady, at(20), ""),
		held("i3", "d1", "alice", at(6)), // never ready
		held("i4", "d2", "alice", at(0)), fact("i4", meter.KindReady, at(4), ""),
	)
	got, err := s.ColdStarts(ctx, "d1", at(0), at(20))
	if err != nil {
		t.Fatal(err)
	}
	want := []meter.Interval{{InstanceID: "i1", DeployID: "d1", Start: at(0), Ready: at(3)}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ColdStarts(d1, [0s, 20s)) (-want +got):\n%s", diff)
	}
}
