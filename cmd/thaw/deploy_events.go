package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/thawhq/thaw/client"
	"github.com/thawhq/thaw/meter"
)

// deployEvents runs `thaw deploy events ID|NAME`: the deployment's events,
// oldest first, and with --follow each new one as it happens until
// interrupted.
func deployEvents(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newDeployFlags("events", "events ID|NAME [--since TIME] [--limit N] [--follow] [--json]", stderr)
	var since timeFlag
	fs.Var(&since, "since", "events at or after TIME (default: 24 hours ago)")
	limit := fs.Int("limit", 0, "at most this many of the newest events, 1..1000 (default 200)")
	follow := fs.Bool("follow", false, "then print each new event as it happens, until interrupted")
	asJSON := fs.Bool("json", false, "print the server's JSON (with --follow: one event per line)")
	ref, err := parseWithRef(fs, args)
	if err != nil {
		return err
	}
	c, v, err := resolve(ctx, fs, ref)
	if err != nil {
		return err
	}
	q := client.DeployEventsQuery{Since: since.t, Limit: *limit}
	if !*follow {
		return show(stdout, *asJSON, func() ([]byte, error) { return c.DeployEventsRaw(ctx, v.ID, q) },
			func() ([]meter.Event, error) { return c.DeployEvents(ctx, v.ID, q) }, writeDeployEvents)
	}
	return c.FollowDeployEvents(ctx, v.ID, q, func(e meter.Event) error {
		if *asJSON {
			b, err := json.Marshal(e)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(stdout, "%s\n", b)
			return err
		}
		_, err := fmt.Fprintln(stdout, eventLine(e))
		return err
	})
}

// eventLine is one followed event: its time, type and message.
func eventLine(e meter.Event) string {
	return fmt.Sprintf("%s  %-18s %s", e.At.UTC().Format(time.RFC3339), cell(e.Type), cell(e.Message))
}
