package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/thawhq/thaw/sim"
)

// runSim runs `thaw sim`: the vLLM-compatible model-server simulator, until
// ctx is done. args are the flags after "sim". Usage and logs go to
// stderr; once the simulator listens, its address is printed to stdout.
// Invalid flags return an error; -h prints usage and returns nil.
func runSim(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: thaw sim --port N --model NAME [flags]\n\n"+
			"Runs a simulated vLLM OpenAI-compatible model server.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	port := fs.Int("port", 0, "TCP `port` to listen on (required; 0 picks a free port)")
	host := fs.String("host", sim.DefaultHost, "`address` to listen on")
	model := fs.String("model", "", "served model `name`, as vLLM's --served-model-name (required)")
	startup := fs.Duration("startup", 3*time.Second,
		"how long to wait before listening, standing in for loading the weights")
	rate := fs.Float64("tokens-per-second", sim.DefaultTokensPerSecond,
		"generation speed of each request: `rate` tokens per second")
	maxNumSeqs := fs.Int("max-num-seqs", sim.DefaultMaxNumSeqs,
		"at most `n` requests generate at once, as vLLM's --max-num-seqs; later ones wait in FIFO order")

	requestLog := fs.String("request-log", "", "append a JSON line per inference request (method, path, headers, whether the caller cancelled it) to `file`; for tests")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("sim: %w", err)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("sim: unexpected arguments %q", fs.Args())
	case !set["port"]:
		return errors.New("sim: --port is required")
	case *port < 0 || *port > 65535:
		return fmt.Errorf("sim: --port %d out of range 0-65535", *port)
	case *model == "":
		return errors.New("sim: --model is required")
	case *host == "":
		return errors.New("sim: --host must not be empty")
	case *startup < 0:
		return fmt.Errorf("sim: --startup %v is negative", *startup)
	case !(*rate > 0):
		return fmt.Errorf("sim: --tokens-per-second %v must be positive", *rate)
	case *maxNumSeqs <= 0:
		return fmt.Errorf("sim: --max-num-seqs %d must be positive", *maxNumSeqs)
	}

	var reqLog io.Writer
	if *requestLog != "" {
		f, err := os.OpenFile(*requestLog, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return fmt.Errorf("sim: --request-log: %w", err)
		}
		defer f.Close()
		reqLog = f
	}
	s, err := sim.New(sim.Config{
		RequestLog:      reqLog,
		Host:            *host,
		Port:            *port,
		Model:           *model,
		Startup:         *startup,
		TokensPerSecond: *rate,
		MaxNumSeqs:      *maxNumSeqs,
		Logger:          slog.New(slog.NewTextHandler(stderr, nil)),
	})
	if err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(ctx)
	announced := make(chan struct{})
	go func() {
		defer close(announced)
		select {
		case <-s.Ready():
			fmt.Fprintf(stdout, "thaw sim: serving %s on http://%s\n", *model, s.Addr())
		case <-runCtx.Done():
		}
	}()
	err = s.Run(runCtx)
	cancel()
	<-announced // stdout is not written after runSim returns
	return err
}
