package main

import (
	"context"
	"errors"
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
	switch args[0] {
	case "dev":
		return runDev(ctx, args[1:], stdout, stderr)
	case "sim":
		return runSim(ctx, args[1:], stdout, stderr)
	case "deploy":
		return runDeploy(ctx, args[1:], stdout, stderr)
	case "server":
		return runServer(ctx, args[1:], stdout, stderr)
	case "activator":
		return runActivator(ctx, args[1:], stdout, stderr)
	case "envoy-bootstrap":
		return runEnvoyBootstrap(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}
