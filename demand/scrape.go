package demand

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"slices"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/redis/go-redis/v9"

	"github.com/thawhq/thaw/meter"
)

// serversKey holds what model servers report, per deployment:
// deploy_id -> "<running> <waiting>" (vLLM's num_requests_running and
// num_requests_waiting summed over the deployment's instances).
const serversKey = "thaw:servers"

// ServerLoad is the load a model server reports on /metrics.
type ServerLoad struct{ Running, Waiting int }

// ParseVLLM reads vllm:num_requests_running and vllm:num_requests_waiting
// (summed over label sets) from a Prometheus text exposition.
func ParseVLLM(r io.Reader) (ServerLoad, error) {
	rd, err := parseVLLM(r)
	return rd.load, err
}

// Metric families of vLLM's /metrics that make meter.Counters, each summed
// over its label sets (finished_reason, engine), and its time to first
// token histogram.
const (
	requestsMetric   = "vllm:request_success_total"
	promptMetric     = "vllm:prompt_tokens_total"
	generationMetric = "vllm:generation_tokens_total"
	ttftMetric       = "vllm:time_to_first_token_seconds"
)

// serverRead is what one read of a model server's /metrics gives: its
// load; its cumulative counters when it exposes all three counter
// families (ok); its time to first token histogram (zero when it has
// none).
type serverRead struct {
	load     ServerLoad
	counters meter.Counters
	ok       bool
	ttft     meter.Histogram
}

// parseVLLM reads a model server's load, counters and TTFT histogram.
func parseVLLM(r io.Reader) (serverRead, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(r)
	if err != nil {
		return serverRead{}, fmt.Errorf("parse metrics: %w", err)
	}
	sum := func(name string) (float64, bool) {
		f, ok := fams[name]
		if !ok {
			return 0, false
		}
		v := 0.0
		for _, m := range f.GetMetric() {
			switch {
			case m.GetCounter() != nil:
				v += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				v += m.GetGauge().GetValue()
			case m.GetUntyped() != nil:
				v += m.GetUntyped().GetValue()
			}
		}
		return v, true
	}
	running, ok1 := sum("vllm:num_requests_running")
	waiting, ok2 := sum("vllm:num_requests_waiting")
	if !ok1 && !ok2 {
		return serverRead{}, errors.New("no vllm:num_requests_running or vllm:num_requests_waiting")
	}
	rd := serverRead{load: ServerLoad{Running: int(math.Round(running)), Waiting: int(math.Round(waiting))}}
	requests, okR := sum(requestsMetric)
	prompt, okP := sum(promptMetric)
	generated, okG := sum(generationMetric)
	rd.counters = meter.Counters{Requests: int64(math.Round(requests)), PromptTokens: int64(math.Round(prompt)),
		CompletionTokens: int64(math.Round(generated))}
	rd.ok = okR && okP && okG
	rd.ttft = histogram(fams[ttftMetric])
	return rd, nil
}

// histogram sums a histogram family's cumulative buckets over its label
// sets (by upper bound); the zero Histogram when f is missing or not a
// histogram.
func histogram(f *dto.MetricFamily) meter.Histogram {
	byBound := map[float64]uint64{}
	var total uint64
	for _, m := range f.GetMetric() {
		h := m.GetHistogram()
		if h == nil {
			continue
		}
		total += h.GetSampleCount()
		for _, b := range h.GetBucket() {
			if ub := b.GetUpperBound(); !math.IsInf(ub, 1) {
				byBound[ub] += b.GetCumulativeCount()
			}
		}
	}
	if len(byBound) == 0 {
		return meter.Histogram{}
	}
	out := meter.Histogram{Bounds: slices.Sorted(maps.Keys(byBound))}
	for _, ub := range out.Bounds {
		out.Counts = append(out.Counts, byBound[ub])
	}
	out.Counts = append(out.Counts, total)
	return out
}

// Target is one ready model server to scrape.
type Target struct {
	DeployID string
	// InstanceID names the instance; "" when it is not known: its load
	// counts, its requests and tokens do not (they are kept per instance).
	InstanceID string
	Addr       string // host:port
	// Baseline is what the server counted before it was ready: thaw's
	// warm-up. Its first read counts from there (meter.Scrape.Baseline).
	Baseline meter.Counters
}

// RoundObserver receives each round of reads of the model servers, read
// or not (the stats sampler: it takes the rounds' deltas per deployment).
// It must not block: the next round waits for it.
type RoundObserver interface {
	Observe(now time.Time, round []meter.Scrape)
}

// TokenCounter receives each round of the model servers' cumulative
// counters (meter.TokenCounter), which it turns into requests and tokens
// per deployment and hour.
type TokenCounter interface {
	Count(ctx context.Context, now time.Time, round []meter.Scrape) error
}

// ScraperConfig configures a Scraper.
type ScraperConfig struct {
	Redis redis.UniversalClient
	// Targets returns the ready instances (draining ones included: they
	// still serve).
	Targets func() []Target
	// Tokens, when set, receives every round's counters of every target,
	// read or not. Owner is then required.
	Tokens TokenCounter
	// Rounds, when set, also receives every round, TTFT histograms
	// included.
	Rounds RoundObserver
	// Owner returns the owner of a deployment, "" when it is unknown (it
	// was deleted).
	Owner func(deployID string) string
	// Interval between scrapes. Default 1s.
	Interval time.Duration
	// TTL of what was written: stale numbers vanish if scraping stops.
	// Default 5s.
	TTL    time.Duration
	HTTP   *http.Client
	Logger *slog.Logger
}

// Scraper reads the model servers' own load and counters (vLLM metrics),
// so that demand includes traffic that never passed through an activator
// (warm traffic sent straight to instances by Envoy) and requests queued
// inside the servers, and so that the requests and tokens the meter
// records include that traffic too. It runs where the fleet runs: the
// meter's one writer.
type Scraper struct{ cfg ScraperConfig }

// NewScraper returns a Scraper; Run starts it.
func NewScraper(cfg ScraperConfig) (*Scraper, error) {
	if cfg.Redis == nil || cfg.Targets == nil {
		return nil, errors.New("demand: scraper needs Redis and Targets")
	}
	if cfg.Tokens != nil && cfg.Owner == nil {
		return nil, errors.New("demand: scraper counting tokens needs Owner")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 5 * time.Second
	}
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{Timeout: cfg.Interval}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Scraper{cfg: cfg}, nil
}

// ObserveRounds sets Config.Rounds: for what is built after the scraper
// (thaw's stats sampler). Call it before Run.
func (s *Scraper) ObserveRounds(o RoundObserver) { s.cfg.Rounds = o }

// Run scrapes every Interval until ctx is done.
func (s *Scraper) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			if err := s.scrapeOnce(ctx, now); err != nil && ctx.Err() == nil {
				s.cfg.Logger.Warn("demand: scrape", "err", err)
			}
		}
	}
}

// scrapeOnce reads every target's /metrics, at once, and hands what it read
// on: the load per deployment to Redis, the counters to Tokens as read at
// now.
func (s *Scraper) scrapeOnce(ctx context.Context, now time.Time) error {
	targets := s.cfg.Targets()
	loads := map[string]ServerLoad{}
	round := make([]meter.Scrape, len(targets))
	var mu sync.Mutex // guards loads
	var wg sync.WaitGroup
	for i, tg := range targets {
		round[i] = meter.Scrape{InstanceID: tg.InstanceID, DeployID: tg.DeployID, Baseline: tg.Baseline}
		if s.cfg.Tokens != nil && tg.InstanceID != "" {
			round[i].Owner = s.cfg.Owner(tg.DeployID)
		}
		wg.Go(func() {
			rd, err := s.scrape(ctx, tg.Addr)
			if err != nil {
				s.cfg.Logger.Debug("demand: scrape instance", "deploy", tg.DeployID, "instance", tg.InstanceID, "addr", tg.Addr, "err", err)
				return
			}
			round[i].Counters, round[i].OK, round[i].TTFT = rd.counters, rd.ok, rd.ttft
			l := rd.load
			mu.Lock()
			cur := loads[tg.DeployID]
			loads[tg.DeployID] = ServerLoad{Running: cur.Running + l.Running, Waiting: cur.Waiting + l.Waiting}
			mu.Unlock()
		})
	}
	wg.Wait()
	var errs []error
	if err := s.writeLoads(ctx, loads); err != nil {
		errs = append(errs, err)
	}
	if s.cfg.Rounds != nil {
		s.cfg.Rounds.Observe(now, round)
	}
	if s.cfg.Tokens != nil {
		if err := s.cfg.Tokens.Count(ctx, now, round); err != nil {
			errs = append(errs, fmt.Errorf("count tokens: %w", err))
		}
	}
	return errors.Join(errs...)
}

// writeLoads replaces the servers' load in Redis.
func (s *Scraper) writeLoads(ctx context.Context, loads map[string]ServerLoad) error {
	fields := make([]any, 0, 2*len(loads))
	for id, l := range loads {
		fields = append(fields, id, fmt.Sprintf("%d %d", l.Running, l.Waiting))
	}
	_, err := s.cfg.Redis.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, serversKey)
		if len(fields) > 0 {
			p.HSet(ctx, serversKey, fields...)
			p.PExpire(ctx, serversKey, s.cfg.TTL)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("write server load: %w", err)
	}
	return nil
}

// scrape reads one model server's /metrics.
func (s *Scraper) scrape(ctx context.Context, addr string) (serverRead, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return serverRead{}, err
	}
	resp, err := s.cfg.HTTP.Do(req)
	if err != nil {
		return serverRead{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return serverRead{}, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return parseVLLM(resp.Body)
}
