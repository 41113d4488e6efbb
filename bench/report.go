package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// Status of a scenario in a report.
const (
	StatusOK     = "ok"      // ran; its figures are measured
	StatusFailed = "failed"  // started but could not measure; Why says why
	StatusNotRun = "not_run" // the path it measures is not built yet; Why says which
)

// Result is one scenario's outcome.
type Result struct {
	// Name is the scenario's key in the report, e.g. "warm_overhead".
	Name string
	// Status is StatusOK, StatusFailed or StatusNotRun.
	Status string
	// Why explains a failed or not-run scenario.
	Why string
	// Headline is the figure the table shows, e.g. "added p50 0.12 ms".
	Headline string
	// Target is the goal, in words, e.g. "added p50 < 0.3 ms".
	Target string
	// Met says whether the measured figure meets Target; meaningful only
	// with StatusOK.
	Met bool
	// Method says in a sentence or two how the figures were measured and
	// what they include.
	Method string
	// Figures are the measured values, written into the JSON object next
	// to status, target and met. Names carry their unit ("p99_ms").
	Figures map[string]any
}

// MarshalJSON writes r as one flat object: its figures plus "status",
// "target", "met" (omitted when not run), "why" and "method" when set.
func (r Result) MarshalJSON() ([]byte, error) {
	m := make(map[string]any, len(r.Figures)+5)
	for k, v := range r.Figures {
		m[k] = v
	}
	m["status"] = r.Status
	if r.Target != "" {
		m["target"] = r.Target
	}
	if r.Status != StatusNotRun {
		m["met"] = r.Status == StatusOK && r.Met
	}
	if r.Why != "" {
		m["why"] = r.Why
	}
	if r.Method != "" {
		m["method"] = r.Method
	}
	return json.Marshal(m)
}

// verdict is the table's "met" column.
func (r Result) verdict() string {
	switch {
	case r.Status == StatusNotRun:
		return "not run"
	case r.Status != StatusOK:
		return "FAILED"
	case r.Met:
		return "yes"
	default:
		return "NO"
	}
}

// figure is the table's "figure" column.
func (r Result) figure() string {
	if r.Status == StatusOK {
		return r.Headline
	}
	why, _, _ := strings.Cut(r.Why, "\n") // the rest (a log tail) stays in the JSON
	return why
}

// Report is one run of the benchmark.
type Report struct {
	Machine Machine
	Results []Result
}

// MarshalJSON writes one key per scenario plus "machine".
func (rep Report) MarshalJSON() ([]byte, error) {
	m := make(map[string]any, len(rep.Results)+1)
	m["machine"] = rep.Machine
	for _, r := range rep.Results {
		m[r.Name] = r
	}
	return json.Marshal(m)
}

// WriteMarkdown writes the report as a markdown table followed by the
// machine it ran on.
func (rep Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	b.WriteString("| scenario | figure | target | met |\n|---|---|---|---|\n")
	for _, r := range rep.Results {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", r.Name, mdEscape(r.figure()), mdEscape(r.Target), r.verdict())
	}
	fmt.Fprintf(&b, "\nMachine: %s\n", rep.Machine)
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteTable writes the report as an aligned plain-text table.
func (rep Report) WriteTable(w io.Writer) error {
	rows := [][]string{{"SCENARIO", "FIGURE", "TARGET", "MET"}}
	for _, r := range rep.Results {
		rows = append(rows, []string{r.Name, r.figure(), r.Target, r.verdict()})
	}
	width := make([]int, 4)
	for _, row := range rows {
		for i, c := range row {
			width[i] = max(width[i], len(c))
		}
	}
	var b strings.Builder
	for _, row := range rows {
		for i, c := range row {
			if i == len(row)-1 {
				b.WriteString(c)
				break
			}
			fmt.Fprintf(&b, "%-*s  ", width[i], c)
		}
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "machine: %s\n", rep.Machine)
	_, err := io.WriteString(w, b.String())
	return err
}

func mdEscape(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
