package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// EnvoyBin is bin/envoy (scripts/envoy.sh installs it).
func EnvoyBin() (string, error) { return RepoBin("envoy") }

// EnvoyConfig says how to start one Envoy. Zero values pick the defaults
// noted on each field.
type EnvoyConfig struct {
	// Bin is the envoy binary; default EnvoyBin().
	Bin string
	// Bootstrap is the bootstrap config (JSON or YAML); required.
	Bootstrap []byte
	// Admin is the admin address the bootstrap configures (host:port).
	Admin string
	// Dir holds envoy.json and envoy.log; required.
	Dir string
	// Ready is how long StartEnvoy waits for the admin's /ready to say
	// LIVE; default 20s.
	Ready time.Duration
}

// Envoy is one running Envoy (--concurrency 1, --log-level warn).
type Envoy struct {
	*Proc
	EnvoyAdmin
	Log string // its log file
}

// StartEnvoy writes the bootstrap, starts Envoy and waits until its admin's
// /ready answers LIVE. On an error the process is stopped, and the error
// holds its log's tail.
func StartEnvoy(cfg EnvoyConfig) (*Envoy, error) {
	if err := orFind(&cfg.Bin, EnvoyBin); err != nil {
		return nil, err
	}
	if cfg.Ready == 0 {
		cfg.Ready = 20 * time.Second
	}
	conf := filepath.Join(cfg.Dir, "envoy.json")
	if err := os.WriteFile(conf, cfg.Bootstrap, 0o600); err != nil {
		return nil, err
	}
	log := filepath.Join(cfg.Dir, "envoy.log")
	logf, err := os.Create(log)
	if err != nil {
		return nil, err
	}
	p, err := Start(ProcConfig{
		Name:        "envoy",
		Args:        []string{cfg.Bin, "-c", conf, "--disable-hot-restart", "--concurrency", "1", "--log-level", "warn"},
		Setpgid:     true,
		Output:      logf,
		StopTimeout: 5 * time.Second,
	})
	if err != nil {
		logf.Close()
		return nil, err
	}
	go func() { <-p.Done(); logf.Close() }()
	e := &Envoy{Proc: p, EnvoyAdmin: EnvoyAdmin{URL: "http://" + cfg.Admin}, Log: log}
	err = p.WaitReady(cfg.Ready, 20*time.Millisecond, func() error {
		if !e.ready() {
			return errors.New("admin /ready is not LIVE")
		}
		return nil
	})
	if err != nil {
		p.Stop()
		return nil, err
	}
	return e, nil
}

// StartEnvoyT is StartEnvoy for a test (see StartT and Need).
func StartEnvoyT(t testing.TB, cfg EnvoyConfig) *Envoy {
	t.Helper()
	Need(t, orFind(&cfg.Bin, EnvoyBin))
	return startT(t, func() (*Envoy, error) { return StartEnvoy(cfg) })
}

func (a EnvoyAdmin) ready() bool {
	resp, err := a.get(context.Background(), "/ready")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode == http.StatusOK && strings.TrimSpace(string(b)) == "LIVE"
}

// EnvoyAdmin reads an Envoy's admin interface.
type EnvoyAdmin struct {
	// URL is the admin's http://host:port.
	URL string
	// HTTP sends the requests; nil means a client with a 10s timeout.
	HTTP *http.Client
}

var adminClient = &http.Client{Timeout: 10 * time.Second}

func (a EnvoyAdmin) get(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.URL+path, nil)
	if err != nil {
		return nil, err
	}
	hc := a.HTTP
	if hc == nil {
		hc = adminClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("envoy admin: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("envoy admin: GET %s: %s", path, resp.Status)
	}
	return resp, nil
}

// Stat is one counter or gauge, -1 when Envoy does not have it.
func (a EnvoyAdmin) Stat(ctx context.Context, name string) (int64, error) {
	resp, err := a.get(ctx, "/stats?filter="+url.QueryEscape("^"+strings.ReplaceAll(name, ".", `\.`)+"$"))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	stats, err := ParseStats(resp.Body)
	if err != nil {
		return 0, err
	}
	if v, ok := stats[name]; ok {
		return v, nil
	}
	return -1, nil
}

// Stats is every counter and gauge whose name contains part.
func (a EnvoyAdmin) Stats(ctx context.Context, part string) (map[string]int64, error) {
	resp, err := a.get(ctx, "/stats")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	all, err := ParseStats(resp.Body)
	if err != nil {
		return nil, err
	}
	for name := range all {
		if !strings.Contains(name, part) {
			delete(all, name)
		}
	}
	return all, nil
}

// HostStats maps each host of the cluster to the value of stat (e.g.
// "health_flags", "priority", "rq_total") in /clusters.
func (a EnvoyAdmin) HostStats(ctx context.Context, cluster, stat string) (map[string]string, error) {
	resp, err := a.get(ctx, "/clusters")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return ParseClusters(resp.Body, cluster, stat)
}

// ParseStats reads the text format of Envoy's /stats ("name: value"
// lines) into the numeric stats; histograms and text readouts, whose
// values are not integers, are left out.
func ParseStats(r io.Reader) (map[string]int64, error) {
	out := map[string]int64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), ": ")
		if !ok {
			continue
		}
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			out[name] = n
		}
	}
	return out, sc.Err()
}

// ParseClusters reads the text format of Envoy's /clusters
// ("cluster::host::stat::value" lines) and maps each host of cluster to the
// value of stat.
func ParseClusters(r io.Reader, cluster, stat string) (map[string]string, error) {
	out := map[string]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		parts := strings.Split(sc.Text(), "::")
		// Hosts are host:port; "default_priority" and "high_priority" lines
		// are the cluster's circuit breakers.
		if len(parts) == 4 && parts[0] == cluster && parts[2] == stat && strings.Contains(parts[1], ":") {
			out[parts[1]] = parts[3]
		}
	}
	return out, sc.Err()
}
