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
	return dispatch(ctx, "", usage, commands, args, stdout, stderr)
}

// command is one of thaw's commands or subcommands. It takes the arguments
// after its name; usage and logs go to stderr; -h prints the usage and
// returns flag.ErrHelp.
type command func(ctx context.Context, args []string, stdout, stderr io.Writer) error

// commands are thaw's commands by name.
var commands = map[string]command{
	"dev":             runDev,
	"sim":             runSim,
	"deploy":          runDeploy,
	"usage":           runUsage,
	"account":         runAccount,
	"server":          runServer,
	"activator":       runActivator,
	"envoy-bootstrap": runEnvoyBootstrap,
}

// dispatch runs the command of cmds that args[0] names with the rest of
// args. help (or -h) prints usage to stdout; no command or an unknown one
// prints it to stderr and is an error, prefixed with prefix (the command
// line level, "thaw deploy: "). A command's -h printed its usage: an
// answer, not a failure.
func dispatch(ctx context.Context, prefix, usage string, cmds map[string]command, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New(prefix + "missing command")
	}
	run, ok := cmds[args[0]]
	switch {
	case args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help":
		fmt.Fprint(stdout, usage)
		return nil
	case !ok:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("%sunknown command %q", prefix, args[0])
	}
	if err := run(ctx, args[1:], stdout, stderr); !errors.Is(err, flag.ErrHelp) {
		return err
	}
	return nil
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
