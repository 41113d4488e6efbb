package demand

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/redis/go-redis/v9"
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
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(r)
	if err != nil {
		return ServerLoad{}, fmt.Errorf("parse metrics: %w", err)
	}
	sum := func(name string) (int, bool) {
		f, ok := fams[name]
		if !ok {
			return 0, false
		}
		v := 0.0
		for _, m := range f.GetMetric() {
			switch {
			case m.GetGauge() != nil:
				v += m.GetGauge().GetValue()
			case m.GetUntyped() != nil:
				v += m.GetUntyped().GetValue()
			}
		}
		return int(v + 0.5), true
	}
	running, ok1 := sum("vllm:num_requests_running")
	waiting, ok2 := sum("vllm:num_requests_waiting")
	if !ok1 && !ok2 {
		return ServerLoad{}, errors.New("no vllm:num_requests_running or vllm:num_requests_waiting")
	}
	return ServerLoad{Running: running, Waiting: waiting}, nil
}

// ScraperConfig configures a Scraper.
type ScraperConfig struct {
	Redis redis.UniversalClient
	// Targets returns the ready instances' addresses (host:port) per
	// deployment.
	Targets func() map[string][]string
	// Interval between scrapes. Default 1s.
	Interval time.Duration
	// TTL of what was written: stale numbers vanish if scraping stops.
	// Default 5s.
	TTL    time.Duration
	HTTP   *http.Client
	Logger *slog.Logger
}

// Scraper reads the model servers' own load (vLLM metrics), so that demand
// includes traffic that never passed through an activator (warm traffic
// sent straight to instances by Envoy) and requests queued inside
// the servers.
type Scraper struct{ cfg ScraperConfig }

// NewScraper returns a Scraper; Run starts it.
func NewScraper(cfg ScraperConfig) (*Scraper, error) {
	if cfg.Redis == nil || cfg.Targets == nil {
		return nil, errors.New("demand: scraper needs Redis and Targets")
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

// Run scrapes every Interval until ctx is done.
func (s *Scraper) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := s.scrapeOnce(ctx); err != nil && ctx.Err() == nil {
			s.cfg.Logger.Warn("demand: scrape", "err", err)
		}
	}
}

func (s *Scraper) scrapeOnce(ctx context.Context) error {
	targets := s.cfg.Targets()
	var mu sync.Mutex
	loads := map[string]ServerLoad{}
	var wg sync.WaitGroup
	for id, addrs := range targets {
		for _, addr := range addrs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				l, err := s.scrape(ctx, addr)
				if err != nil {
					s.cfg.Logger.Debug("demand: scrape instance", "deploy", id, "addr", addr, "err", err)
					return
				}
				mu.Lock()
				cur := loads[id]
				loads[id] = ServerLoad{Running: cur.Running + l.Running, Waiting: cur.Waiting + l.Waiting}
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
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

func (s *Scraper) scrape(ctx context.Context, addr string) (ServerLoad, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return ServerLoad{}, err
	}
	resp, err := s.cfg.HTTP.Do(req)
	if err != nil {
		return ServerLoad{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ServerLoad{}, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return ParseVLLM(resp.Body)
}
