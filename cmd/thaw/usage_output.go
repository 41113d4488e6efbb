package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/thawhq/thaw/api"
	"github.com/thawhq/thaw/meter"
)

// This file prints usage reports, statements, the account and its events
// for thaw usage and thaw account.

// writeUsage prints a usage report: its window, then one row per item,
// keyed as grouped (by deployment, GPU type, day or week), and a TOTAL row.
func writeUsage(w io.Writer, rep meter.Report, groupBy string) error {
	fmt.Fprintf(w, "usage from %s to %s\n\n", rep.From.UTC().Format(time.RFC3339), rep.To.UTC().Format(time.RFC3339))
	var key []string
	switch groupBy {
	case "gpu":
		key = []string{"GPU"}
	case "day":
		key = []string{"DAY"}
	case "week":
		key = []string{"WEEK"}
	default:
		key = []string{"DEPLOY_ID", "MODEL", "GPU"}
	}
	keyOf := func(it meter.Item) []string {
		switch groupBy {
		case "gpu":
			return []string{it.GPU}
		case "day", "week":
			if it.Start == nil {
				return []string{""}
			}
			return []string{it.Start.UTC().Format(time.DateOnly)}
		}
		gpu := it.GPU
		if gpu != "" && it.NumGPUs > 0 {
			gpu = fmt.Sprintf("%dx%s", it.NumGPUs, it.GPU)
		}
		return []string{it.DeployID, it.Model, gpu}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, k := range key {
		fmt.Fprintf(tw, "%s\t", k)
	}
	fmt.Fprintln(tw, "GPU_HOURS\tLOADING_HOURS\tCOST_USD\tREQUESTS\tPROMPT_TOKENS\tCOMPLETION_TOKENS")
	row := func(keys []string, it meter.Item) {
		for _, k := range keys {
			fmt.Fprintf(tw, "%s\t", cell(k))
		}
		fmt.Fprintf(tw, "%s\t%s\t%.2f\t%d\t%d\t%d\n", hours(it.GPUSeconds), hours(it.LoadingSeconds), it.CostUSD,
			it.Requests, it.PromptTokens, it.CompletionTokens)
	}
	for _, it := range rep.Items {
		row(keyOf(it), it)
	}
	total := make([]string, len(key))
	total[0] = "TOTAL"
	row(total, rep.Total)
	return tw.Flush()
}

// hours prints seconds as hours to the thousandth (3.6 s).
func hours(secs float64) string { return fmt.Sprintf("%.3f", secs/3600) }

// writeInvoices prints each weekly statement: a title line, its lines as a
// table and its total; statements are separated by a blank line.
func writeInvoices(w io.Writer, inv api.InvoicesView) error {
	if len(inv.Statements) == 0 {
		_, err := fmt.Fprintf(w, "no GPU time in the weeks from %s to %s\n",
			inv.From.UTC().Format(time.DateOnly), inv.To.UTC().Format(time.RFC3339))
		return err
	}
	for i, st := range inv.Statements {
		if i > 0 {
			fmt.Fprintln(w)
		}
		state := "final"
		if !st.Final {
			state = "open: the week is not over"
		}
		fmt.Fprintf(w, "week %s to %s (%s)\n", st.Start.UTC().Format(time.DateOnly), st.End.UTC().Format(time.DateOnly), state)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "DEPLOY_ID\tMODEL\tGPU\tGPU_HOURS\tRATE_USD\tAMOUNT_USD")
		for _, l := range st.Lines {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%.3f\t%g\t%.2f\n", cell(l.DeployID), cell(l.Model), cell(l.GPU), l.GPUHours, l.RateUSD, l.AmountUSD)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(w, "total %.2f USD\n", st.TotalUSD)
	}
	return nil
}

// writeAccount prints the account as an aligned "key: value" block.
func writeAccount(w io.Writer, v api.AccountView) error {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	row := func(k, val string) { fmt.Fprintf(tw, "%s:\t%s\n", k, cell(val)) }
	row("owner", v.Owner)
	row("spent this week", usd(v.SpentThisWeekUSD))
	row("spent this month", usd(v.SpentThisMonthUSD))
	limit := "none"
	if v.SpendingLimitUSD > 0 {
		limit = usd(v.SpendingLimitUSD) + " a month"
	}
	if v.SpendingCapUSD != nil {
		limit += fmt.Sprintf(" (the operator's cap: %s)", usd(*v.SpendingCapUSD))
	}
	row("spending limit", limit)
	row("burn rate", usd(v.BurnUSDPerHour)+" an hour")
	switch {
	case v.LimitReachedAt != nil:
		row("limit reached", v.LimitReachedAt.UTC().Format(time.RFC3339)+" at this rate")
	case v.SpendingLimitUSD > 0:
		row("limit reached", "not at this rate")
	}
	if v.NotifiedPercent > 0 {
		row("notified", fmt.Sprintf("%d%% of the limit reached this month", v.NotifiedPercent))
	}
	blocked := "no"
	if v.Blocked {
		blocked = "yes: " + v.BlockedReason
	}
	row("blocked", blocked)
	row("webhook", v.WebhookURL)
	return tw.Flush()
}

func usd(v float64) string { return fmt.Sprintf("%.2f USD", v) }

// writeEvents prints the account's events, oldest first, as a table.
func writeEvents(w io.Writer, evs []meter.Event) error { return writeEventTable(w, evs, true) }

// writeDeployEvents prints one deployment's events, oldest first, as a
// table without the DEPLOY_ID column they would all share.
func writeDeployEvents(w io.Writer, evs []meter.Event) error { return writeEventTable(w, evs, false) }

func writeEventTable(w io.Writer, evs []meter.Event, withDeployID bool) error {
	if len(evs) == 0 {
		_, err := fmt.Fprintln(w, "no events")
		return err
	}
	line := func(at, typ, deployID, msg string) string {
		if withDeployID {
			return at + "\t" + typ + "\t" + deployID + "\t" + msg
		}
		return at + "\t" + typ + "\t" + msg
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, line("AT", "TYPE", "DEPLOY_ID", "MESSAGE"))
	for _, e := range evs {
		fmt.Fprintln(tw, line(e.At.UTC().Format(time.RFC3339), cell(e.Type), cell(e.DeployID), cell(e.Message)))
	}
	return tw.Flush()
}
