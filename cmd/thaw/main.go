package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `thaw: serverless custom LLM deployments on Nomad GPU clusters

Usage:
  thaw dev [flags]                 run the whole product in one process (see thaw dev -h)
  thaw server --redis-addr H:P [flags]
                                   the production control plane on Nomad (see thaw server -h)
  thaw sim --port N --model NAME   run the vLLM-compatible model-server simulator
  thaw deploy create|list|get|update|delete [flags]
                                   manage deployments (THAW_ADDR, THAW_TOKEN)
  thaw usage [invoices] [flags]    what your deployments cost: GPU-hours, USD, tokens; weekly statements
  thaw account [set|events] [flags]
                                   your spend, spending limit, burn rate and events
  thaw activator [flags]           run an activator replica behind Envoy (see thaw activator -h)
  thaw envoy-bootstrap [flags]     print an Envoy bootstrap that takes its config from --xds-addr
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := runMain(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "thaw:", err)
		os.Exit(1)
	}
}

func runMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("missing command")
	}
	run, ok := commands[args[0]]
	switch {
	case args[0] == "-h" || args[0] == "--help" || args[0] == "help":
		fmt.Fprint(stdout, usage)
		return nil
	case !ok:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
	// A command's -h printed its usage: an answer, not a failure.
	if err := run(ctx, args[1:], stdout, stderr); !errors.Is(err, flag.ErrHelp) {
		return err
	}
	return nil
}

// commands are thaw's commands by name. Each takes the arguments after its
// name; usage and logs go to stderr; -h prints the usage and returns
// flag.ErrHelp.
var commands = map[string]func(ctx context.Context, args []string, stdout, stderr io.Writer) error{
	"dev":             runDev,
	"sim":             runSim,
	"deploy":          runDeploy,
	"usage":           runUsage,
	"account":         runAccount,
	"server":          runServer,
	"activator":       runActivator,
	"envoy-bootstrap": runEnvoyBootstrap,
}

// newFlags returns the flag set of `thaw <name>`, whose -h prints usage and
// then the flags to stderr.
func newFlags(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		_, _ = io.WriteString(fs.Output(), usage)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlagsOnly parses the flags of a command that takes no other
// arguments.
func parseFlagsOnly(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return nil
}
