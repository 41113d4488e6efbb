package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/thawhq/thaw/api"
	"github.com/thawhq/thaw/client"
	"github.com/thawhq/thaw/meter"
)

// This file holds thaw usage and thaw account: what the caller's
// deployments cost, their statements, spending limit and events, through
// the same client, THAW_ADDR and THAW_TOKEN as thaw deploy.

const usageUsage = `usage: thaw usage [--from TIME] [--to TIME] [--group-by deployment|gpu|day|week] [--deployment ID|NAME] [--json]
       thaw usage invoices [--from TIME] [--to TIME] [--csv] [--json]

What your deployments' GPU time cost: GPU-hours (loading included, and
shown apart), USD, requests and tokens; by default this month so far.
"invoices" prints the weekly statements, Monday to Monday UTC (by default
the last four weeks and this one); --csv prints the server's CSV as is.

TIME is RFC 3339 (2026-11-02T00:00:00Z) or a date (2026-11-02, midnight
UTC). THAW_TOKEN and THAW_ADDR as for thaw deploy.
`

const accountUsage = `usage: thaw account [--json]
       thaw account set [--spending-limit USD] [--webhook-url URL] [--webhook-secret S] [--json]
       thaw account events [--since TIME] [--json]

Your spend this week and this month, your monthly spending limit (and the
operator's cap on it), what your running instances burn an hour and when
the limit is reached at that rate; over the limit, deployments are scaled
to zero until it is raised or the month turns.

"set" changes only what is given: --spending-limit 0 removes the limit
(where the operator allows), --webhook-url "" the webhook. "events" lists
what thaw told you (thresholds crossed, deployments running idle), by
default over the last 30 days.
`

// runUsage runs `thaw usage ...`; args are the arguments after "usage".
func runUsage(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "invoices" {
		return usageInvoices(ctx, args[1:], stdout, stderr)
	}
	fs := newClientFlags("thaw usage", usageUsage[len("usage: "):], stderr)
	var from, to timeFlag
	fs.Var(&from, "from", "start of the window, TIME (default: the month's start)")
	fs.Var(&to, "to", "end of the window, TIME (default: now)")
	groupBy := fs.String("group-by", "deployment", "one line per deployment, gpu (type), day or week (Monday, UTC)")
	ref := fs.String("deployment", "", "only this deployment, by deploy id or model name (deleted ones: by id)")
	asJSON := fs.Bool("json", false, "print the server's JSON instead of a table")
	c, err := parseClientFlags(fs, args)
	if err != nil {
		return err
	}
	q := client.UsageQuery{From: from.t, To: to.t, GroupBy: *groupBy}
	if *ref != "" {
		if q.DeployID, err = deployIDOf(ctx, c, *ref); err != nil {
			return fmt.Errorf("thaw usage: %w", err)
		}
	}
	return show(stdout, *asJSON, func() ([]byte, error) { return c.UsageRaw(ctx, q) },
		func() (meter.Report, error) { return c.Usage(ctx, q) }, func(w io.Writer, r meter.Report) error { return writeUsage(w, r, *groupBy) })
}

// deployIDOf is the deploy id ref names: a deployment of the caller's by
// id or model name or, failing that, ref itself (a deleted deployment's id,
// whose usage the server still has).
func deployIDOf(ctx context.Context, c *client.Client, ref string) (string, error) {
	v, err := c.Resolve(ctx, ref)
	switch {
	case errors.Is(err, client.ErrNoMatch):
		return ref, nil
	case errors.Is(err, client.ErrAmbiguous):
		return "", fmt.Errorf("%w (see thaw deploy list)", err)
	case err != nil:
		return "", err
	}
	return v.ID, nil
}

func usageInvoices(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newClientFlags("thaw usage invoices", "thaw usage invoices [--from TIME] [--to TIME] [--csv] [--json]", stderr)
	var from, to timeFlag
	fs.Var(&from, "from", "statements of the weeks from this one's, TIME (default: four weeks ago)")
	fs.Var(&to, "to", "statements of the weeks before this, TIME (default: now)")
	asCSV := fs.Bool("csv", false, "print the server's CSV (one row per line) instead of a table")
	asJSON := fs.Bool("json", false, "print the server's JSON instead of a table")
	c, err := parseClientFlags(fs, args)
	if err != nil {
		return err
	}
	if *asCSV && *asJSON {
		return errors.New("thaw usage invoices: --csv and --json: choose one")
	}
	switch {
	case *asCSV:
		b, err := c.InvoicesCSV(ctx, from.t, to.t)
		if err != nil {
			return err
		}
		_, err = stdout.Write(b)
		return err
	case *asJSON:
		raw, err := c.InvoicesRaw(ctx, from.t, to.t)
		if err != nil {
			return err
		}
		return writeIndented(stdout, raw)
	}
	inv, err := c.Invoices(ctx, from.t, to.t)
	if err != nil {
		return err
	}
	return writeInvoices(stdout, inv)
}

// runAccount runs `thaw account ...`; args are the arguments after
// "account".
func runAccount(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "set":
			return accountSet(ctx, args[1:], stdout, stderr)
		case "events":
			return accountEvents(ctx, args[1:], stdout, stderr)
		}
	}
	fs := newClientFlags("thaw account", accountUsage[len("usage: "):], stderr)
	asJSON := fs.Bool("json", false, "print the server's JSON instead of a summary")
	c, err := parseClientFlags(fs, args)
	if err != nil {
		return err
	}
	return show(stdout, *asJSON, func() ([]byte, error) { return c.AccountRaw(ctx) },
		func() (api.AccountView, error) { return c.Account(ctx) }, writeAccount)
}

func accountSet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newClientFlags("thaw account set",
		"thaw account set [--spending-limit USD] [--webhook-url URL] [--webhook-secret S] [--json]\n\nChanges only what is given.", stderr)
	limit := fs.String("spending-limit", "", "monthly spending limit in USD; 0 removes it (where the operator allows)")
	hookURL := fs.String("webhook-url", "", `URL that receives the 50%, 80% and 100% notifications; "" removes it`)
	secret := fs.String("webhook-secret", "", "secret the notifications are signed with (HMAC-SHA256); never shown back")
	asJSON := fs.Bool("json", false, "print the server's JSON instead of a summary")
	c, err := parseClientFlags(fs, args)
	if err != nil {
		return err
	}
	set := setFlags(fs)
	var up api.AccountUpdate
	if set["spending-limit"] {
		usd, err := strconv.ParseFloat(*limit, 64)
		if err != nil {
			return fmt.Errorf("thaw account set: --spending-limit %q: want a number of USD, e.g. 100 or 0 for none", *limit)
		}
		up.SpendingLimitUSD = &usd
	}
	if set["webhook-url"] {
		up.WebhookURL = hookURL
	}
	if set["webhook-secret"] {
		up.WebhookSecret = secret
	}
	if up == (api.AccountUpdate{}) {
		return errors.New("thaw account set: nothing to change: give --spending-limit, --webhook-url and/or --webhook-secret")
	}
	return show(stdout, *asJSON, func() ([]byte, error) { return c.SetAccountRaw(ctx, up) },
		func() (api.AccountView, error) { return c.SetAccount(ctx, up) }, writeAccount)
}

func accountEvents(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newClientFlags("thaw account events", "thaw account events [--since TIME] [--json]", stderr)
	var since timeFlag
	fs.Var(&since, "since", "events at or after TIME (default: 30 days ago)")
	asJSON := fs.Bool("json", false, "print the server's JSON instead of a table")
	c, err := parseClientFlags(fs, args)
	if err != nil {
		return err
	}
	return show(stdout, *asJSON, func() ([]byte, error) { return c.EventsRaw(ctx, since.t) },
		func() ([]meter.Event, error) { return c.Events(ctx, since.t) }, writeEvents)
}

// parseClientFlags parses the flags of a command that takes no other
// arguments, naming the command in errors, and returns the deploy API
// client of THAW_ADDR and THAW_TOKEN.
func parseClientFlags(fs *flag.FlagSet, args []string) (*client.Client, error) {
	pos, err := parseDeployFlags(fs, args)
	if err != nil {
		return nil, err
	}
	if len(pos) > 0 {
		return nil, fmt.Errorf("%s: unexpected argument %q", fs.Name(), pos[0])
	}
	return deployClient()
}

// timeFlag is a flag holding an RFC 3339 time or a date (midnight UTC).
type timeFlag struct{ t time.Time }

func (f *timeFlag) String() string {
	if f == nil || f.t.IsZero() {
		return ""
	}
	return f.t.Format(time.RFC3339)
}

func (f *timeFlag) Set(s string) error {
	for _, layout := range []string{time.RFC3339, time.DateOnly} {
		if t, err := time.Parse(layout, s); err == nil {
			f.t = t
			return nil
		}
	}
	return errors.New("want an RFC 3339 time (2026-11-02T00:00:00Z) or a date (2026-11-02)")
}

// show prints the server's JSON as it came (asJSON), else write's
// rendering of the decoded answer.
func show[T any](stdout io.Writer, asJSON bool, raw func() ([]byte, error), decoded func() (T, error), write func(io.Writer, T) error) error {
	if asJSON {
		b, err := raw()
		if err != nil {
			return err
		}
		return writeIndented(stdout, b)
	}
	v, err := decoded()
	if err != nil {
		return err
	}
	return write(stdout, v)
}
