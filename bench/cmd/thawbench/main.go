// Command thawbench is `make bench`: it starts real `thaw dev` processes,
// Envoys (bin/envoy) and a one-node Nomad with fake GPUs (bin/nomad) on
// 127.0.0.1, runs each benchmark scenario against them, prints a table and
// writes results/latest.json and results/latest.md.
//
// Usage:
//
//	go build -o bin/thaw ./cmd/thaw && go run ./bench/cmd/thawbench [-thaw bin/thaw] [-out bench/results] [-only burst,hold_capacity]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/thawhq/thaw/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "thawbench:", err)
		os.Exit(1)
	}
}

// scenarios in report order.
var scenarios = []string{"warm_overhead", "wake_to_serve", "cold_start_overhead", "cold_start_vllm", "burst", "hold_capacity", "xds_scale"}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil || o == nil {
		return err
	}
	if _, err := os.Stat(o.bin); err != nil {
		return fmt.Errorf("thaw binary: %w (run `make build` first)", err)
	}
	if err := raiseFileLimit(); err != nil {
		fmt.Fprintln(stderr, "thawbench: raising the file limit:", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	rep := runScenarios(ctx, o, stderr)
	if err := rep.WriteTable(stdout); err != nil {
		return err
	}
	return writeResults(o.out, rep)
}

// options are thawbench's flags.
type options struct {
	bin, out                                          string
	only                                              map[string]bool // scenarios to run; empty: all
	coldStarts, warmRequests, nomadCold, holdRequests int
	vllmCold                                          int
}

// selected reports whether scenario name is to run.
func (o *options) selected(name string) bool { return len(o.only) == 0 || o.only[name] }

// parseFlags parses args; it returns nil options, and no error, after
// -help.
func parseFlags(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("thawbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	bin := fs.String("thaw", "bin/thaw", "the thaw `binary` to benchmark (make build)")
	out := fs.String("out", "bench/results", "`directory` for latest.json and latest.md")
	only := fs.String("only", "", "comma-separated `scenarios` to run (default: all); the others are reported as not run")
	coldStarts := fs.Int("cold-starts", 50, "cold starts measured for wake_to_serve and cold_start_overhead")
	warmRequests := fs.Int("warm-requests", 6000, "measured requests per target and concurrency level in warm_overhead")
	nomadCold := fs.Int("nomad-cold-starts", 5, "cold starts measured on Nomad for cold_start_overhead")
	holdRequests := fs.Int("hold-requests", 10000, "requests held in hold_capacity")
	vllmCold := fs.Int("vllm-cold-starts", 3, "cold starts measured on real vLLM for cold_start_vllm (each about a minute on CPUs)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil
		}
		return nil, err
	}
	o := &options{bin: *bin, out: *out, only: map[string]bool{},
		coldStarts: *coldStarts, warmRequests: *warmRequests, nomadCold: *nomadCold, holdRequests: *holdRequests, vllmCold: *vllmCold}
	for _, s := range strings.Split(*only, ",") {
		if s = strings.TrimSpace(s); s != "" {
			o.only[s] = true
		}
	}
	return o, nil
}

// runScenarios runs the selected scenarios in report order, the others
// reported as not run, logging each step to stderr.
func runScenarios(ctx context.Context, o *options, stderr io.Writer) bench.Report {
	start := time.Now()
	rep := bench.Report{Machine: bench.ThisMachine(start)}
	skipped := func(name string) bench.Result {
		return bench.Result{Name: name, Status: bench.StatusNotRun, Why: "not selected (-only)"}
	}
	step := func(name string) {
		fmt.Fprintf(stderr, "thawbench: %s (%s)\n", name, time.Since(start).Round(time.Second))
	}

	if o.selected("warm_overhead") {
		step("warm_overhead")
		rep.Results = append(rep.Results, runWarm(ctx, o.bin, warmConfig{
			Requests: o.warmRequests, Warmup: 500, Concurrency: []int{1, 16}, Rounds: 3, Envoy: true,
		}))
	} else {
		rep.Results = append(rep.Results, skipped("warm_overhead"))
	}
	if o.selected("wake_to_serve") || o.selected("cold_start_overhead") {
		step("wake_to_serve, cold_start_overhead")
		// Startups 7 ms apart: the listen moment lands at different phases of
		// any probe ticker under 35 ms.
		startups := []time.Duration{300 * time.Millisecond, 307 * time.Millisecond, 314 * time.Millisecond,
			321 * time.Millisecond, 328 * time.Millisecond}
		wake, cold := runCold(ctx, o.bin, o.coldStarts, startups)
		rep.Results = append(rep.Results, wake, cold)
	} else {
		rep.Results = append(rep.Results, skipped("wake_to_serve"), skipped("cold_start_overhead"))
	}
	if o.selected("cold_start_vllm") {
		step("cold_start_vllm")
		rep.Results = append(rep.Results, runColdVLLM(ctx, o.bin, o.vllmCold))
	} else {
		rep.Results = append(rep.Results, skipped("cold_start_vllm"))
	}
	if o.selected("burst") {
		step("burst")
		rep.Results = append(rep.Results, runBurst(ctx, o.bin, burstConfig{
			Requests: 1000, MaxBatch: 8, MaxInstances: 4, MaxTokens: 8, TPS: 100, Startup: 300 * time.Millisecond,
		}))
	} else {
		rep.Results = append(rep.Results, skipped("burst"))
	}
	if o.selected("cold_start_overhead") || o.selected("burst") {
		step("cold_start_overhead, burst on Nomad")
		var cold, burst *bench.Result
		for i := range rep.Results {
			switch r := &rep.Results[i]; r.Name {
			case "cold_start_overhead":
				cold = r
			case "burst":
				burst = r
			}
		}
		runNomad(ctx, o.bin, o.nomadCold, cold, burst, burstConfig{
			Requests: 1000, MaxBatch: 8, MaxInstances: 4, MaxTokens: 8, TPS: 100,
		})
	}
	if o.selected("hold_capacity") {
		step("hold_capacity")
		rep.Results = append(rep.Results, runHold(ctx, o.bin, holdConfig{Requests: o.holdRequests, Startup: 20 * time.Second}))
	} else {
		rep.Results = append(rep.Results, skipped("hold_capacity"))
	}
	if o.selected("xds_scale") {
		step("xds_scale")
		rep.Results = append(rep.Results, runXDSScale(ctx, o.bin, xdsConfig{Deployments: 1000, Changes: 20}))
	} else {
		rep.Results = append(rep.Results, skipped("xds_scale"))
	}
	step("done")
	return rep
}

// writeResults writes latest.json and latest.md into dir.
func writeResults(dir string, rep bench.Report) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "latest.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	var md strings.Builder
	if err := rep.WriteMarkdown(&md); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "latest.md"), []byte(md.String()), 0o644)
}

// raiseFileLimit lifts the soft limit on open files to the hard limit:
// hold_capacity keeps 10,000 client sockets open, and the thaw dev it starts
// inherits the limit for its side of them.
func raiseFileLimit() error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if lim.Cur >= lim.Max {
		return nil
	}
	lim.Cur = lim.Max
	return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
}
