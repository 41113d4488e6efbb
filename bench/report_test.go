package bench

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func sampleReport() Report {
	return Report{
		Machine: Machine{NProc: 2, MemoryMB: 1024, Kernel: "6.8.0", GoVersion: "go1.26.8", Date: "2026-11-25T12:00:00Z"},
		Results: []Result{
			{Name: "warm_overhead", Status: StatusOK, Headline: "added p50 0.1 ms", Target: "added p50 < 0.3 ms", Met: true,
				Figures: map[string]any{"added_p50_ms": 0.1}},
			{Name: "burst", Status: StatusOK, Headline: "3 errors", Target: "zero errors", Met: false},
			{Name: "hold_capacity", Status: StatusFailed, Why: "thaw dev exited\nlog line 1\nlog line 2", Target: "< 200 MB", Met: true},
			{Name: "xds_scale", Status: StatusNotRun, Why: "xds not built", Target: "< 100 ms"},
		},
	}
}

func TestReportJSON(t *testing.T) {
	b, err := json.Marshal(sampleReport())
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]any{
		"machine":       {"nproc": 2.0, "memory_mb": 1024.0, "kernel": "6.8.0", "go_version": "go1.26.8", "date": "2026-11-25T12:00:00Z"},
		"warm_overhead": {"status": "ok", "target": "added p50 < 0.3 ms", "met": true, "added_p50_ms": 0.1},
		"burst":         {"status": "ok", "target": "zero errors", "met": false},
		// A failed scenario never counts as met, whatever Met says.
		"hold_capacity": {"status": "failed", "target": "< 200 MB", "met": false, "why": "thaw dev exited\nlog line 1\nlog line 2"},
		"xds_scale":     {"status": "not_run", "target": "< 100 ms", "why": "xds not built"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("report JSON (-want +got):\n%s", diff)
	}
}

func TestReportMarkdown(t *testing.T) {
	var b strings.Builder
	if err := sampleReport().WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	want := "| scenario | figure | target | met |\n|---|---|---|---|\n" +
		"| warm_overhead | added p50 0.1 ms | added p50 < 0.3 ms | yes |\n" +
		"| burst | 3 errors | zero errors | NO |\n" +
		"| hold_capacity | thaw dev exited | < 200 MB | FAILED |\n" +
		"| xds_scale | xds not built | < 100 ms | not run |\n" +
		"\nMachine: 2 CPUs, 1024 MB RAM, Linux 6.8.0, go1.26.8, 2026-11-25T12:00:00Z\n"
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("markdown (-want +got):\n%s", diff)
	}
}

func TestReportTable(t *testing.T) {
	var b strings.Builder
	if err := sampleReport().WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(b.String(), "\n")
	if !strings.HasPrefix(lines[0], "SCENARIO       FIGURE") {
		t.Errorf("header not aligned: %q", lines[0])
	}
	if !strings.HasPrefix(lines[4], "xds_scale      xds not built") || !strings.HasSuffix(lines[4], "not run") {
		t.Errorf("not-run row: %q", lines[4])
	}
}

func TestParseProcField(t *testing.T) {
	status := "Name:\tthaw\nVmPeak:\t  123456 kB\nVmRSS:\t   45678 kB\n"
	got, err := parseProcField(status, "VmRSS")
	if err != nil || got != 45678 {
		t.Errorf("VmRSS = %d, %v; want 45678", got, err)
	}
	if _, err := parseProcField(status, "VmHWM"); err == nil {
		t.Error("missing field: no error")
	}
}
