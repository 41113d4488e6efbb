package meter

// Requests and tokens, counted from the model servers' own counters.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// Counters are what a model server counted since it started: finished
// requests (vLLM's vllm:request_success_total, summed over
// finished_reason), prompt tokens (vllm:prompt_tokens_total) and generated
// tokens (vllm:generation_tokens_total). They only grow while it runs.
type Counters struct {
	Requests, PromptTokens, CompletionTokens int64
}

// Delta is what a model server counted between two reads of its counters,
// prev then cur. A counter lower than before means the server restarted
// (under the same identity) and counts from zero again: all of cur is new.
// The zero prev, an instance never read before, gives cur: a model server
// starts at zero.
//
// A server that restarted and then counted past its old values before the
// next read looks like one that did not restart: what it counted before
// the restart and was not read yet is lost (at most one read interval of
// traffic).
func Delta(prev, cur Counters) Counters {
	if cur.Requests < prev.Requests || cur.PromptTokens < prev.PromptTokens || cur.CompletionTokens < prev.CompletionTokens {
		return cur
	}
	return Counters{
		Requests:         cur.Requests - prev.Requests,
		PromptTokens:     cur.PromptTokens - prev.PromptTokens,
		CompletionTokens: cur.CompletionTokens - prev.CompletionTokens,
	}
}

// Counted returns what read cur of an instance counted since prev, the
// instance's previous good read (seen: there is one), and whether cur
// counts at all: the first read of an adopted instance (one that ran
// under a previous thaw process, which counted it up to its last read) is
// only where counting resumes, and counts nothing (false).
//
// The first read of a new instance counts from cur.Baseline, what its
// model server counted before it was ready (thaw's warm-up), rather than
// from zero: each counter less its baseline, none below zero (a server
// that published a counter late, or counts a token differently from the
// warm-up's usage, is not taken for one that restarted). After that,
// Delta between reads: a server that restarts counts from zero again.
//
// The TokenCounter and the stats sampler both count with it.
func Counted(prev Scrape, seen bool, cur Scrape, adopted bool) (Counters, bool) {
	switch {
	case seen:
		return Delta(prev.Counters, cur.Counters), true
	case adopted:
		return Counters{}, false
	}
	b, c := cur.Baseline, cur.Counters
	return Counters{
		Requests:         max(c.Requests-b.Requests, 0),
		PromptTokens:     max(c.PromptTokens-b.PromptTokens, 0),
		CompletionTokens: max(c.CompletionTokens-b.CompletionTokens, 0),
	}, true
}

// Plus returns c and d added.
func (c Counters) Plus(d Counters) Counters {
	return Counters{c.Requests + d.Requests, c.PromptTokens + d.PromptTokens, c.CompletionTokens + d.CompletionTokens}
}

// Scrape is one read of one ready instance's counters, in one round.
type Scrape struct {
	InstanceID, DeployID string
	// Owner is the deployment's owner; "" when it is not known (the
	// deployment was deleted): then the owner seen on an earlier read of
	// the instance is used.
	Owner    string
	Counters Counters
	// OK is false when the instance is listed as ready but its counters
	// could not be read this round (a timeout, a parse error): it keeps
	// what was read of it before, and its next good read counts from there.
	OK bool
	// TTFT is the server's cumulative time to first token histogram
	// (vllm:time_to_first_token_seconds), zero when it exposes none. The
	// TokenCounter ignores it; the stats sampler reads it. It includes the
	// warm-up's one observation: Baseline has no histogram.
	TTFT Histogram
	// Baseline is what the server had counted before it was ready:
	// thaw's warm-up (fleet.Ready.Warmup). The first read of a new
	// instance counts from it (Counted).
	Baseline Counters
}

// TokenLedger is where a TokenCounter adds what it counted: the Store.
type TokenLedger interface {
	AddTokens(ctx context.Context, t Tokens) error
}

// TokenCounter turns rounds of reads of the ready instances' counters into
// the ledger's requests and tokens per deployment and hour: what each
// instance counted since its previous read (Delta) is added to its
// deployment's row for the hour of the read.
//
// It remembers the last read of each instance by instance ID. An instance
// read for the first time counts its whole value less its Baseline: it is
// a new model server, which started at zero and then served thaw's
// warm-up, no user's request. Unless it was held before this process
// started (Held): then it ran under the previous thaw process, which
// counted it up to its last read, and its first read here is only where
// counting resumes; what it served between the two processes' reads (thaw's
// downtime) is not counted, rather than counted twice. An instance missing
// from a round (it ended) is forgotten, and with it what it counted after
// its last read: at most one scrape interval of its traffic.
//
// Rows the ledger could not take (the database is down) are kept, merged
// per deployment and hour, and retried on the next round.
type TokenCounter struct {
	cfg TokenCounterConfig
	log *slog.Logger

	// mu guards last and pending. Count holds it for a whole round, the
	// ledger's writes included, so rounds never interleave.
	mu      sync.Mutex
	last    map[string]Scrape // instance ID -> its last good read
	pending map[tokenKey]Tokens
}

type tokenKey struct {
	deployID string
	hour     time.Time
}

// TokenCounterConfig configures a TokenCounter. Ledger is required.
type TokenCounterConfig struct {
	Ledger TokenLedger
	// Held reports when an instance's GPUs were held, by the runtime's
	// record, while it is held (Writer.Held). An instance held before
	// Started ran under a previous thaw process. nil: every instance is
	// taken as new.
	Held func(instanceID string) (time.Time, bool)
	// Started is when this process started counting. Default: when
	// NewTokenCounter is called.
	Started time.Time
	Logger  *slog.Logger
}

// NewTokenCounter returns a TokenCounter; Count feeds it.
func NewTokenCounter(cfg TokenCounterConfig) (*TokenCounter, error) {
	if cfg.Ledger == nil {
		return nil, errors.New("meter: TokenCounter needs a Ledger")
	}
	if cfg.Started.IsZero() {
		cfg.Started = time.Now()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &TokenCounter{cfg: cfg, log: cfg.Logger, last: map[string]Scrape{}, pending: map[tokenKey]Tokens{}}, nil
}

// adopted reports whether instance id was held before this process
// started counting.
func (tc *TokenCounter) adopted(id string) bool {
	if tc.cfg.Held == nil {
		return false
	}
	at, ok := tc.cfg.Held(id)
	return ok && at.Before(tc.cfg.Started)
}

// Count takes one round of reads made at now: round lists every instance
// the fleet has ready (draining ones included), read or not. It adds what
// was counted since the previous round to the ledger and returns the
// ledger's error, if any; the rows are then retried on the next round.
func (tc *TokenCounter) Count(ctx context.Context, now time.Time, round []Scrape) error {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	var rows []Tokens
	tc.last, rows = countRound(tc.last, round, now, tc.adopted)
	for _, r := range rows {
		k := tokenKey{r.DeployID, r.Hour}
		if p, ok := tc.pending[k]; ok {
			r.Requests += p.Requests
			r.PromptTokens += p.PromptTokens
			r.CompletionTokens += p.CompletionTokens
		}
		tc.pending[k] = r
	}
	todo := make([]Tokens, 0, len(tc.pending))
	for _, p := range tc.pending {
		todo = append(todo, p)
	}
	slices.SortFunc(todo, func(a, b Tokens) int {
		return cmp.Or(a.Hour.Compare(b.Hour), cmp.Compare(a.DeployID, b.DeployID))
	})
	var errs []error
	for _, t := range todo {
		if err := tc.cfg.Ledger.AddTokens(ctx, t); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(tc.pending, tokenKey{t.DeployID, t.Hour})
		tc.log.Debug("meter: tokens counted", "deploy", t.DeployID, "hour", t.Hour,
			"requests", t.Requests, "prompt_tokens", t.PromptTokens, "completion_tokens", t.CompletionTokens)
	}
	if len(errs) > 0 {
		return fmt.Errorf("meter: tokens kept for the next round: %w", errors.Join(errs...))
	}
	return nil
}

// countRound is Count's pure part: given the last good read of each
// instance and a round read at now, it returns the reads to remember and
// the rows to add, one per deployment with something counted (hour: now's,
// UTC), ordered by deployment. What each read counts is Counted.
func countRound(last map[string]Scrape, round []Scrape, now time.Time, adopted func(id string) bool) (map[string]Scrape, []Tokens) {
	hour := now.UTC().Truncate(time.Hour)
	next := make(map[string]Scrape, len(round))
	sums := map[string]Tokens{}
	for _, s := range round {
		if s.InstanceID == "" {
			continue
		}
		prev, seen := last[s.InstanceID]
		if s.Owner == "" {
			s.Owner = prev.Owner
		}
		switch {
		case !s.OK && seen:
			next[s.InstanceID] = prev
			continue
		case !s.OK, s.Owner == "":
			// Not read, or read but nobody to count it for: its next
			// read with an owner counts it all.
			continue
		}
		next[s.InstanceID] = s
		d, ok := Counted(prev, seen, s, !seen && adopted(s.InstanceID))
		if !ok || d == (Counters{}) {
			continue
		}
		t := sums[s.DeployID]
		c := Counters{t.Requests, t.PromptTokens, t.CompletionTokens}.Plus(d)
		sums[s.DeployID] = Tokens{DeployID: s.DeployID, Owner: s.Owner, Hour: hour,
			Requests: c.Requests, PromptTokens: c.PromptTokens, CompletionTokens: c.CompletionTokens}
	}
	rows := make([]Tokens, 0, len(sums))
	for _, t := range sums {
		rows = append(rows, t)
	}
	slices.SortFunc(rows, func(a, b Tokens) int { return cmp.Compare(a.DeployID, b.DeployID) })
	return next, rows
}
