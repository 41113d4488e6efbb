package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
)

// Sample is one line of the Prometheus text format (thaw's /metrics, vLLM's
// and the simulator's).
type Sample struct {
	// Name is the series name as written: a histogram's lines end in
	// _bucket, _sum or _count.
	Name   string
	Labels map[string]string
	Value  float64
	// Line is the line as scraped, for failure reports.
	Line string
}

// Metrics is one scrape: the samples in order and each family's # TYPE.
type Metrics struct {
	Samples []Sample
	Types   map[string]string
}

var labelRE = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

// ParseMetrics reads the Prometheus text format. A sample line without a
// numeric value is an error: every exporter thaw talks to writes one.
func ParseMetrics(r io.Reader) (Metrics, error) {
	m := Metrics{Types: map[string]string{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, typ, _ := strings.Cut(rest, " ")
			m.Types[name] = typ
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		s := Sample{Labels: map[string]string{}, Line: line}
		rest := line
		if i := strings.IndexByte(line, '{'); i >= 0 {
			j := strings.LastIndexByte(line, '}')
			if j < i {
				return Metrics{}, fmt.Errorf("metrics line %q: unclosed labels", line)
			}
			for _, l := range labelRE.FindAllStringSubmatch(line[i+1:j], -1) {
				s.Labels[l[1]] = l[2]
			}
			rest = line[:i] + line[j+1:]
		}
		f := strings.Fields(rest)
		if len(f) < 2 {
			return Metrics{}, fmt.Errorf("metrics line %q has no value", line)
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			return Metrics{}, fmt.Errorf("metrics line %q: %w", line, err)
		}
		s.Name, s.Value = f[0], v
		m.Samples = append(m.Samples, s)
	}
	return m, sc.Err()
}

// ScrapeMetrics is ParseMetrics of GET url; a status other than 200 is an
// error.
func ScrapeMetrics(ctx context.Context, url string) (Metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Metrics{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return Metrics{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Metrics{}, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	m, err := ParseMetrics(resp.Body)
	if err != nil {
		return Metrics{}, fmt.Errorf("GET %s: %w", url, err)
	}
	return m, nil
}

// Sum adds up the samples named name whose labels include every pair of
// labels (nil: all of them); found is false when there is none.
func (m Metrics) Sum(name string, labels map[string]string) (sum float64, found bool) {
	for _, s := range m.Samples {
		if s.Name == name && hasLabels(s, labels) {
			sum, found = sum+s.Value, true
		}
	}
	return sum, found
}

func hasLabels(s Sample, labels map[string]string) bool {
	for k, v := range labels {
		if s.Labels[k] != v {
			return false
		}
	}
	return true
}
