package meter_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/thawhq/thaw/meter"
)

func TestDelta(t *testing.T) {
	for _, tt := range []struct {
		name            string
		prev, cur, want meter.Counters
	}{
		{"first read counts it all", meter.Counters{}, meter.Counters{3, 30, 300}, meter.Counters{3, 30, 300}},
		{"growth", meter.Counters{3, 30, 300}, meter.Counters{5, 50, 310}, meter.Counters{2, 20, 10}},
		{"nothing new", meter.Counters{3, 30, 300}, meter.Counters{3, 30, 300}, meter.Counters{}},
		// Tokens are counted as they are generated, the request when it
		// ends: a read in between sees tokens and no new request.
		{"tokens before the request ends", meter.Counters{3, 30, 300}, meter.Counters{3, 40, 320}, meter.Counters{0, 10, 20}},
		{"restart: every counter lower", meter.Counters{3, 30, 300}, meter.Counters{1, 10, 5}, meter.Counters{1, 10, 5}},
		{"restart: one counter lower is enough", meter.Counters{3, 30, 300}, meter.Counters{4, 40, 100}, meter.Counters{4, 40, 100}},
		{"restart to zero", meter.Counters{3, 30, 300}, meter.Counters{}, meter.Counters{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if d := cmp.Diff(tt.want, meter.Delta(tt.prev, tt.cur)); d != "" {
				t.Errorf("Delta(%v, %v) (-want +got):\n%s", tt.prev, tt.cur, d)
			}
		})
	}
}

func TestCounted(t *testing.T) {
	warm := meter.Counters{Requests: 1, PromptTokens: 2, CompletionTokens: 1}
	at := func(c, baseline meter.Counters) meter.Scrape {
		return meter.Scrape{InstanceID: "i1", DeployID: "d1", OK: true, Counters: c, Baseline: baseline}
	}
	for _, tt := range []struct {
		name          string
		prev          meter.Scrape
		seen, adopted bool
		cur           meter.Scrape
		want          meter.Counters
		wantOK        bool
	}{
		{name: "new instance that only served the warm-up: nothing",
			cur: at(warm, warm), want: meter.Counters{}, wantOK: true},
		{name: "new instance: counts from its warm-up",
			cur: at(meter.Counters{3, 22, 11}, warm), want: meter.Counters{2, 20, 10}, wantOK: true},
		{name: "new instance without a baseline: all of it",
			cur: at(meter.Counters{3, 22, 11}, meter.Counters{}), want: meter.Counters{3, 22, 11}, wantOK: true},
		{name: "new instance below its baseline (a counter published late): nothing, not all",
			cur: at(meter.Counters{0, 2, 1}, warm), want: meter.Counters{}, wantOK: true},
		{name: "adopted instance, first read: where counting resumes",
			adopted: true, cur: at(meter.Counters{100, 1000, 500}, warm), want: meter.Counters{}, wantOK: false},
		{name: "seen: since the previous read, the baseline aside",
			prev: at(warm, warm), seen: true, cur: at(meter.Counters{2, 12, 6}, warm),
			want: meter.Counters{1, 10, 5}, wantOK: true},
		{name: "seen, adopted: since the previous read",
			prev: at(meter.Counters{100, 1000, 500}, meter.Counters{}), seen: true, adopted: true,
			cur: at(meter.Counters{101, 1010, 505}, meter.Counters{}), want: meter.Counters{1, 10, 5}, wantOK: true},
		{name: "seen, the server restarted (counters went down): all of it, from zero",
			prev: at(meter.Counters{5, 50, 20}, warm), seen: true, cur: at(meter.Counters{1, 3, 2}, warm),
			want: meter.Counters{1, 3, 2}, wantOK: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := meter.Counted(tt.prev, tt.seen, tt.cur, tt.adopted)
			if d := cmp.Diff(tt.want, got); d != "" || ok != tt.wantOK {
				t.Errorf("Counted = %v, counts %v, want counts %v (-want +got):\n%s", got, ok, tt.wantOK, d)
			}
		})
	}
}

// tokenLedger records AddTokens calls; while down is set it fails them.
type tokenLedger struct {
	down  bool
	added []meter.Tokens
}

func (l *tokenLedger) AddTokens(_ context.Context, t meter.Tokens) error {
	if l.down {
		return errors.New("database is down")
	}
	l.added = append(l.added, t)
	return nil
}

func read(inst, deploy, owner string, requests, prompt, completion int64) meter.Scrape {
	return meter.Scrape{InstanceID: inst, DeployID: deploy, Owner: owner, OK: true,
		Counters: meter.Counters{Requests: requests, PromptTokens: prompt, CompletionTokens: completion}}
}

// warmedUp is s of an instance whose model server served thaw's warm-up
// (one request, 2 prompt tokens, 1 generated) before it was ready.
func warmedUp(s meter.Scrape) meter.Scrape {
	s.Baseline = meter.Counters{Requests: 1, PromptTokens: 2, CompletionTokens: 1}
	return s
}

func failed(inst, deploy string) meter.Scrape {
	return meter.Scrape{InstanceID: inst, DeployID: deploy, Owner: "alice"}
}

// TestTokenCounter steps rounds of reads through time and checks what each
// round adds to the ledger.
func TestTokenCounter(t *testing.T) {
	h := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	row := func(deploy, owner string, hour time.Time, requests, prompt, completion int64) meter.Tokens {
		return meter.Tokens{DeployID: deploy, Owner: owner, Hour: hour, Requests: requests, PromptTokens: prompt, CompletionTokens: completion}
	}
	type step struct {
		name  string
		at    time.Time
		down  bool
		round []meter.Scrape
		want  []meter.Tokens // added by this round
	}
	steps := []step{
		{name: "first read of each new instance counts its whole value, of one adopted from the previous process nothing; one row per deployment",
			at: h.Add(10 * time.Minute),
			round: []meter.Scrape{
				read("i1", "d1", "alice", 2, 20, 200), read("i2", "d1", "alice", 1, 10, 100),
				read("i3", "d2", "bob", 1, 5, 7), read("i0", "d1", "alice", 100, 1000, 10000),
			},
			want: []meter.Tokens{row("d1", "alice", h, 3, 30, 300), row("d2", "bob", h, 1, 5, 7)}},
		{name: "the adopted instance counts from its first read",
			at: h.Add(11 * time.Minute),
			round: []meter.Scrape{
				read("i1", "d1", "alice", 2, 20, 200), read("i2", "d1", "alice", 1, 10, 100),
				read("i3", "d2", "bob", 1, 5, 7), read("i0", "d1", "alice", 101, 1010, 10100),
			},
			want: []meter.Tokens{row("d1", "alice", h, 1, 10, 100)}},
		{name: "nothing new adds nothing",
			at:    h.Add(11*time.Minute + time.Second),
			round: []meter.Scrape{read("i1", "d1", "alice", 2, 20, 200), read("i2", "d1", "alice", 1, 10, 100), read("i3", "d2", "bob", 1, 5, 7)},
		},
		{name: "deltas; a failed read keeps the instance's last value",
			at: h.Add(12 * time.Minute),
			round: []meter.Scrape{
				read("i1", "d1", "alice", 4, 40, 400), failed("i2", "d1"),
				read("i3", "d2", "bob", 1, 5, 7),
			},
			want: []meter.Tokens{row("d1", "alice", h, 2, 20, 200)}},
		{name: "the failed instance's next read counts from its last good one",
			at: h.Add(13 * time.Minute),
			round: []meter.Scrape{
				read("i1", "d1", "alice", 4, 40, 400), read("i2", "d1", "alice", 3, 30, 300),
				read("i3", "d2", "bob", 1, 5, 7),
			},
			want: []meter.Tokens{row("d1", "alice", h, 2, 20, 200)}},
		{name: "a restarted model server (lower counters) counts from zero",
			at: h.Add(14 * time.Minute),
			round: []meter.Scrape{
				read("i1", "d1", "alice", 1, 8, 9), read("i2", "d1", "alice", 3, 30, 300),
				read("i3", "d2", "bob", 1, 5, 7),
			},
			want: []meter.Tokens{row("d1", "alice", h, 1, 8, 9)}},
		{name: "a read in the next hour goes to the next hour's row",
			at: h.Add(61 * time.Minute),
			round: []meter.Scrape{
				read("i1", "d1", "alice", 2, 18, 19), read("i2", "d1", "alice", 3, 30, 300),
				read("i3", "d2", "bob", 1, 5, 7),
			},
			want: []meter.Tokens{row("d1", "alice", h.Add(time.Hour), 1, 10, 10)}},
		{name: "an instance gone (i3) takes its unread tail with it",
			at:    h.Add(62 * time.Minute),
			round: []meter.Scrape{read("i1", "d1", "alice", 2, 18, 19), read("i2", "d1", "alice", 3, 30, 300)},
		},
		{name: "an instance seen again after it was gone counts as new",
			at:    h.Add(63 * time.Minute),
			round: []meter.Scrape{read("i1", "d1", "alice", 2, 18, 19), read("i2", "d1", "alice", 3, 30, 300), read("i3", "d2", "bob", 2, 6, 8)},
			want:  []meter.Tokens{row("d2", "bob", h.Add(time.Hour), 2, 6, 8)}},
		{name: "a deleted deployment's instance (no owner now) is counted for the owner seen before",
			at: h.Add(64 * time.Minute),
			round: []meter.Scrape{
				read("i1", "d1", "alice", 2, 18, 19), read("i2", "d1", "alice", 3, 30, 300),
				read("i3", "d2", "", 3, 7, 9), read("i4", "d3", "", 5, 5, 5),
			},
			want: []meter.Tokens{row("d2", "bob", h.Add(time.Hour), 1, 1, 1)}},
		{name: "the ledger is down: nothing is added",
			at: h.Add(65 * time.Minute), down: true,
			round: []meter.Scrape{read("i1", "d1", "alice", 3, 20, 21), read("i2", "d1", "alice", 3, 30, 300)},
		},
		{name: "still down, across the hour",
			at: h.Add(121 * time.Minute), down: true,
			round: []meter.Scrape{read("i1", "d1", "alice", 4, 22, 23), read("i2", "d1", "alice", 3, 30, 300)},
		},
		{name: "back: what was kept is added once, merged per hour, with this round's",
			at:    h.Add(122 * time.Minute),
			round: []meter.Scrape{read("i1", "d1", "alice", 5, 24, 25), read("i2", "d1", "alice", 3, 30, 300)},
			want: []meter.Tokens{
				row("d1", "alice", h.Add(time.Hour), 1, 2, 2),
				row("d1", "alice", h.Add(2*time.Hour), 2, 4, 4),
			}},
		{name: "a new instance that served only thaw's warm-up counts nothing",
			at:    h.Add(123 * time.Minute),
			round: []meter.Scrape{read("i1", "d1", "alice", 5, 24, 25), warmedUp(read("i5", "d4", "carol", 1, 2, 1))},
		},
		{name: "then what it serves after its warm-up",
			at:    h.Add(124 * time.Minute),
			round: []meter.Scrape{read("i1", "d1", "alice", 5, 24, 25), warmedUp(read("i5", "d4", "carol", 2, 12, 6))},
			want:  []meter.Tokens{row("d4", "carol", h.Add(2*time.Hour), 1, 10, 5)}},
		{name: "a new instance read first after a user's request counts that request, not the warm-up",
			at:    h.Add(125 * time.Minute),
			round: []meter.Scrape{read("i1", "d1", "alice", 5, 24, 25), warmedUp(read("i5", "d4", "carol", 2, 12, 6)), warmedUp(read("i6", "d4", "carol", 2, 7, 4))},
			want:  []meter.Tokens{row("d4", "carol", h.Add(2*time.Hour), 1, 5, 3)}},
	}
	ledger := &tokenLedger{}
	// The process started at h; i0 was held before it (it ran under the
	// previous thaw process), i1 after.
	held := map[string]time.Time{"i0": h.Add(-time.Hour), "i1": h.Add(time.Minute)}
	tc, err := meter.NewTokenCounter(meter.TokenCounterConfig{Ledger: ledger, Started: h,
		Held: func(id string) (time.Time, bool) { at, ok := held[id]; return at, ok }})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range steps {
		ledger.down = s.down
		ledger.added = nil
		err := tc.Count(context.Background(), s.at, s.round)
		if s.down != (err != nil) {
			t.Errorf("%s: Count error %v with the ledger down=%v", s.name, err, s.down)
		}
		if d := cmp.Diff(s.want, ledger.added); d != "" {
			t.Errorf("%s: added (-want +got):\n%s", s.name, d)
		}
	}
}
