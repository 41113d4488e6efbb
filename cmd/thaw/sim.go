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

// simFlags are `thaw sim`'s flags.
type simFlags struct {
	cfg        sim.Config
	requestLog string
}

// parseSimFlags parses the flags after "sim"; usage goes to stderr. runSim
// prefixes its errors with "sim: ".
func parseSimFlags(args []string, stderr io.Writer) (*simFlags, error) {
	var f simFlags
	fs := newFlags("sim", "Usage: thaw sim --port N --model NAME [flags]\n\n"+
		"Runs a simulated vLLM OpenAI-compatible model server.\n\nFlags:\n", stderr)
	fs.IntVar(&f.cfg.Port, "port", 0, "TCP `port` to listen on (required; 0 picks a free port)")
	fs.StringVar(&f.cfg.Host, "host", sim.DefaultHost, "`address` to listen on")
	fs.StringVar(&f.cfg.Model, "model", "", "served model `name`, as vLLM's --served-model-name (required)")
	fs.DurationVar(&f.cfg.Startup, "startup", 3*time.Second,
		"how long to wait before listening, standing in for loading the weights")
	fs.Float64Var(&f.cfg.TokensPerSecond, "tokens-per-second", sim.DefaultTokensPerSecond,
		"generation speed of each request: `rate` tokens per second")
	fs.IntVar(&f.cfg.MaxNumSeqs, "max-num-seqs", sim.DefaultMaxNumSeqs,
		"at most `n` requests generate at once, as vLLM's --max-num-seqs; later ones wait in FIFO order")
	fs.IntVar(&f.cfg.MaxModelLen, "max-model-len", sim.DefaultMaxModelLen,
		"the model's context length in tokens, as vLLM's --max-model-len: max_tokens over it is a 400, prompt plus output is capped to it")
	fs.StringVar(&f.requestLog, "request-log", "", "append a JSON line per inference request (method, path, headers, whether the caller cancelled it) to `file`; for tests")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	c := f.cfg
	switch {
	case fs.NArg() > 0:
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	case !set["port"]:
		return nil, errors.New("--port is required")
	case c.Port < 0 || c.Port > 65535:
		return nil, fmt.Errorf("--port %d out of range 0-65535", c.Port)
	case c.Model == "":
		return nil, errors.New("--model is required")
	case c.Host == "":
		return nil, errors.New("--host must not be empty")
	case c.Startup < 0:
		return nil, fmt.Errorf("--startup %v is negative", c.Startup)
	case !(c.TokensPerSecond > 0):
		return nil, fmt.Errorf("--tokens-per-second %v must be positive", c.TokensPerSecond)
	case c.MaxNumSeqs <= 0:
		return nil, fmt.Errorf("--max-num-seqs %d must be positive", c.MaxNumSeqs)
	}
	return &f, nil
}

// runSim runs `thaw sim`: the vLLM-compatible model-server simulator, until
// ctx is done. args are the flags after "sim". Usage and logs go to
// stderr; once the simulator listens, its address is printed to stdout.
// Invalid flags return an error; -h prints usage and returns flag.ErrHelp.
func runSim(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := parseSimFlags(args, stderr)
	if err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	cfg := f.cfg
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, nil))
	if f.requestLog != "" {
		file, err := os.OpenFile(f.requestLog, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return fmt.Errorf("sim: --request-log: %w", err)
		}
		defer file.Close()
		cfg.RequestLog = file
	}
	s, err := sim.New(cfg)
	if err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(ctx)
	announced := make(chan struct{})
	go func() {
		defer close(announced)
		select {
		case <-s.Ready():
			fmt.Fprintf(stdout, "thaw sim: serving %s on http://%s\n", cfg.Model, s.Addr())
		case <-runCtx.Done():
		}
	}()
	err = s.Run(runCtx)
	cancel()
	<-announced // stdout is not written after runSim returns
	return err
}
