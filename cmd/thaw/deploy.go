package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/thawhq/thaw/client"
	"github.com/thawhq/thaw/deploy"
)

// defaultDeployAddr is the server the deploy commands talk to when THAW_ADDR
// is unset: where `thaw dev` listens by default.
const defaultDeployAddr = "http://127.0.0.1:8080"

// waitPollInterval is how often `create --wait` reads the deployment.
const waitPollInterval = 500 * time.Millisecond

const deployUsage = `usage: thaw deploy <command> [flags]

Manage your deployments on a thaw server through its deploy API.

commands:
  create   create a deployment (--wait: until it can serve)
  list     list your deployments
  get      show one deployment
  update   change a deployment's min/max instances
  delete   delete a deployment and stop its instances
  events   show a deployment's events (--follow: as they happen)

get, update, delete and events take the deploy id or the model name
(my-model or owner/my-model).

environment:
  THAW_TOKEN  your API token (required; "thaw dev" prints it)
  THAW_ADDR   the server's address (default http://127.0.0.1:8080)
  HF_TOKEN    default of create --hf-token

Run "thaw deploy <command> -h" for the command's flags.
`

// runDeploy runs `thaw deploy <command> ...`; args are the arguments after
// "deploy". Tables and JSON go to stdout; usage and --wait progress to
// stderr. A -h answer returns nil; server errors come back as *client.Error.
func runDeploy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return dispatch(ctx, "thaw deploy: ", deployUsage, deployCommands, args, stdout, stderr)
}

// deployCommands are thaw deploy's commands by name and alias.
var deployCommands = map[string]command{
	"create": deployCreate,
	"list":   deployList,
	"ls":     deployList,
	"get":    deployGet,
	"update": deployUpdate,
	"delete": deployDelete,
	"rm":     deployDelete,
	"events": deployEvents,
}

func deployCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newDeployFlags("create", "create --model-name NAME --gpu GPU --hf-repo ORG/REPO [flags]", stderr)
	modelName := fs.String("model-name", "", "model name, unique among yours; clients call it <owner>/<model-name> (required)")
	gpu := fs.String("gpu", "", "GPU type of each instance, e.g. A100-80GB or H100-80GB")
	numGPUs := fs.Int("num-gpus", 1, "GPUs per instance, 1..8")
	batch := fs.Int("max-batch-size", 96, "requests one instance serves at once, 1..256; more are queued")
	hfRepo := fs.String("hf-repo", "", "Hugging Face repository of the weights, ORG/REPO")
	hfRevision := fs.String("hf-revision", "", "branch, tag or commit of the weights (default: the repository's default)")
	hfToken := fs.String("hf-token", "", "Hugging Face token for private weights (default $HF_TOKEN)")
	minInst := fs.Int("min-instances", 0, "instances kept running without traffic; 0 scales to zero when idle")
	maxInst := fs.Int("max-instances", 1, "most instances to scale up to (raised to --min-instances when that is larger)")
	extraArgs := fs.String("extra-args", "", `extra model-server flags, e.g. "--dtype half"`)
	asJSON := fs.Bool("json", false, "print the server's JSON instead of a table")
	wait := fs.Bool("wait", false, "wait until the deployment can serve, printing progress to stderr")
	waitTimeout := fs.Duration("wait-timeout", 10*time.Minute, "with --wait, give up after this long")
	pos, err := parseDeployFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("thaw deploy create: unexpected argument %q (flags only)", pos[0])
	}
	if *modelName == "" {
		return errors.New("thaw deploy create: --model-name is required")
	}
	set := setFlags(fs)
	req := deploy.CreateRequest{ModelName: *modelName, GPU: *gpu}
	if set["num-gpus"] {
		req.NumGPUs = numGPUs
	}
	if set["max-batch-size"] {
		req.MaxBatchSize = batch
	}
	if set["hf-repo"] || set["hf-revision"] || set["hf-token"] {
		tok := *hfToken
		if !set["hf-token"] {
			tok = os.Getenv("HF_TOKEN")
		}
		req.HF = &deploy.HF{Repo: *hfRepo, Revision: *hfRevision, Token: tok}
	}
	if set["min-instances"] || set["max-instances"] {
		s := deploy.Settings{MinInstances: *minInst, MaxInstances: *maxInst}
		if !set["max-instances"] && s.MinInstances > s.MaxInstances {
			s.MaxInstances = s.MinInstances
		}
		req.Settings = &s
	}
	if set["extra-args"] {
		req.ExtraArgs = strings.Fields(*extraArgs)
	}
	c, err := deployClient()
	if err != nil {
		return err
	}
	raw, err := c.CreateRaw(ctx, req)
	if err != nil {
		return err
	}
	if *wait {
		if raw, err = waitServing(ctx, c, raw, *waitTimeout, stderr); err != nil {
			return err
		}
	}
	return showDeployment(stdout, raw, *asJSON)
}

// waitServing polls the deployment created as raw until it can serve: status
// running with at least min_instances running. It prints a progress line
// whenever the status or instances change, and returns the last deploy
// object read. A failed or deleted deployment and the timeout are errors.
func waitServing(ctx context.Context, c *client.Client, raw json.RawMessage, timeout time.Duration, progress io.Writer) (json.RawMessage, error) {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(waitPollInterval)
	defer tick.Stop()
	last := ""
	for {
		var v deploy.View
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("decode deployment: %w", err)
		}
		if line := progressLine(v); line != last {
			fmt.Fprintln(progress, line)
			last = line
		}
		switch {
		case v.Status == deploy.StatusFailed:
			return nil, fmt.Errorf("deployment %s failed: %s", v.ID, orDash(v.FailReason))
		case v.Status == deploy.StatusDeleted:
			return nil, fmt.Errorf("deployment %s was deleted while waiting", v.ID)
		case v.Status == deploy.StatusRunning && v.Instances.Running >= v.Settings.MinInstances:
			return raw, nil
		}
		select {
		case <-wctx.Done():
			return nil, waitError(ctx, v.ID, timeout, last)
		case <-tick.C:
		}
		var err error
		if raw, err = c.GetRaw(wctx, v.ID); err != nil {
			if wctx.Err() != nil {
				return nil, waitError(ctx, v.ID, timeout, last)
			}
			return nil, err
		}
	}
}

// waitError is why waitServing stopped without the deployment serving: the
// caller's ctx ended, or the timeout passed.
func waitError(ctx context.Context, id string, timeout time.Duration, last string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("waiting for deployment %s: %w", id, err)
	}
	return fmt.Errorf("deployment %s cannot serve yet after waiting %s (last: %s); see thaw deploy get %s", id, timeout, last, id)
}

func deployList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newDeployFlags("list", "list [--status STATUS] [--json]", stderr)
	status := fs.String("status", "", "only deployments with this status (initializing, deploying, running, stopped, failed)")
	asJSON := fs.Bool("json", false, "print the server's JSON (an array) instead of a table")
	pos, err := parseDeployFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("thaw deploy list: unexpected argument %q", pos[0])
	}
	c, err := deployClient()
	if err != nil {
		return err
	}
	if *asJSON {
		raws, err := c.ListRaw(ctx, *status)
		if err != nil {
			return err
		}
		arr, err := json.Marshal(raws)
		if err != nil {
			return fmt.Errorf("server sent invalid JSON: %w", err)
		}
		return writeIndented(stdout, arr)
	}
	views, err := c.List(ctx, *status)
	if err != nil {
		return err
	}
	return writeTable(stdout, views)
}

func deployGet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	raw, _, asJSON, err := onDeployment(ctx, args, stderr, (*client.Client).GetRaw,
		"get", "get ID|NAME [--json]", "print the server's JSON instead of a summary")
	if err != nil {
		return err
	}
	if asJSON {
		return writeIndented(stdout, raw)
	}
	var got deploy.View
	if err := json.Unmarshal(raw, &got); err != nil {
		return fmt.Errorf("decode deployment: %w", err)
	}
	return writeDetails(stdout, got)
}

func deployUpdate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newDeployFlags("update", "update ID|NAME [--min-instances N] [--max-instances N] [--json]\n\nChanges only the settings given; the others keep their current values.", stderr)
	minInst := fs.Int("min-instances", 0, "instances kept running without traffic")
	maxInst := fs.Int("max-instances", 0, "most instances to scale up to")
	asJSON := fs.Bool("json", false, "print the server's JSON instead of a table")
	ref, err := parseWithRef(fs, args)
	if err != nil {
		return err
	}
	set := setFlags(fs)
	if !set["min-instances"] && !set["max-instances"] {
		return errors.New("thaw deploy update: nothing to change: give --min-instances and/or --max-instances")
	}
	c, cur, err := resolve(ctx, fs, ref)
	if err != nil {
		return err
	}
	s := cur.Settings
	if set["min-instances"] {
		s.MinInstances = *minInst
	}
	if set["max-instances"] {
		s.MaxInstances = *maxInst
	}
	raw, err := c.UpdateRaw(ctx, cur.ID, s)
	if err != nil {
		return err
	}
	return showDeployment(stdout, raw, *asJSON)
}

func deployDelete(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	raw, v, asJSON, err := onDeployment(ctx, args, stderr, (*client.Client).DeleteRaw,
		"delete", "delete ID|NAME [--json]\n\nDeletes the deployment and stops its instances.",
		"print the server's answer (the deleted deploy object) as JSON")
	if err != nil {
		return err
	}
	if !asJSON {
		fmt.Fprintf(stdout, "deleted %s\n", v.ID)
		return nil
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		// The server said nothing (204): say what it did, in the deploy
		// object's terms.
		raw, err = json.Marshal(map[string]string{"deploy_id": v.ID, "status": string(deploy.StatusDeleted)})
		if err != nil {
			return err
		}
	}
	return writeIndented(stdout, raw)
}

// onDeployment runs a command on one deployment that takes only --json
// (its usage jsonUsage): it parses the flags, resolves the deployment named
// and calls do with its ID, returning the server's answer.
func onDeployment(ctx context.Context, args []string, stderr io.Writer,
	do func(*client.Client, context.Context, string) (json.RawMessage, error),
	name, usage, jsonUsage string) (raw json.RawMessage, v deploy.View, asJSON bool, err error) {
	fs := newDeployFlags(name, usage, stderr)
	j := fs.Bool("json", false, jsonUsage)
	ref, err := parseWithRef(fs, args)
	if err != nil {
		return nil, v, false, err
	}
	c, v, err := resolve(ctx, fs, ref)
	if err != nil {
		return nil, v, false, err
	}
	raw, err = do(c, ctx, v.ID)
	return raw, v, *j, err
}

// resolve makes the API client (deployClient) and finds the caller's
// deployment ref names (deploy id or model name), with an error saying so
// when none or several do.
func resolve(ctx context.Context, fs *flag.FlagSet, ref string) (*client.Client, deploy.View, error) {
	c, err := deployClient()
	if err != nil {
		return nil, deploy.View{}, err
	}
	v, err := c.Resolve(ctx, ref)
	if errors.Is(err, client.ErrNoMatch) || errors.Is(err, client.ErrAmbiguous) {
		return nil, v, fmt.Errorf("%s: %w (see thaw deploy list)", fs.Name(), err)
	}
	return c, v, err
}

// deployClient makes the API client from THAW_TOKEN and THAW_ADDR.
func deployClient() (*client.Client, error) {
	token := os.Getenv("THAW_TOKEN")
	if token == "" {
		return nil, errors.New(`THAW_TOKEN is not set: export the API token "thaw dev" printed (export THAW_TOKEN=...)`)
	}
	addr := os.Getenv("THAW_ADDR")
	if addr == "" {
		addr = defaultDeployAddr
	}
	return client.New(addr, token), nil
}

// newDeployFlags returns the flag set of one deploy command, whose -h prints
// "usage: thaw deploy <usage>" and the flags to stderr.
func newDeployFlags(name, usage string, stderr io.Writer) *flag.FlagSet {
	return newClientFlags("thaw deploy "+name, "thaw deploy "+usage, stderr)
}

// newClientFlags returns the flag set of a command of the API's client
// (thaw deploy, usage, account) named name, whose -h prints
// "usage: <usage>" and the flags to stderr.
func newClientFlags(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: %s\n", usage)
		if hasFlags(fs) {
			fmt.Fprintln(fs.Output(), "\nflags:")
			fs.PrintDefaults()
		}
	}
	return fs
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// parseDeployFlags parses args allowing flags after positional arguments
// ("get ID --json"), and returns the positional ones. Everything after "--"
// is positional.
func parseDeployFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%s: %w", fs.Name(), err)
		}
		rest := fs.Args()
		consumed := args[:len(args)-len(rest)]
		if len(rest) == 0 || (len(consumed) > 0 && consumed[len(consumed)-1] == "--") {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// parseWithRef parses the flags of a command that takes one deployment,
// by deploy id or model name.
func parseWithRef(fs *flag.FlagSet, args []string) (string, error) {
	pos, err := parseDeployFlags(fs, args)
	if err != nil {
		return "", err
	}
	switch {
	case len(pos) == 0:
		return "", fmt.Errorf("%s: missing deployment id or name (see thaw deploy list)", fs.Name())
	case len(pos) > 1:
		return "", fmt.Errorf("%s: want one deployment id or name, got %q", fs.Name(), pos)
	}
	return pos[0], nil
}

// setFlags names the flags given on the command line.
func setFlags(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}
