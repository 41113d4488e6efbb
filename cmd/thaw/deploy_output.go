package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/thawhq/thaw/deploy"
)

// This file prints deployments for thaw deploy: tables, key/value blocks,
// indented JSON and --wait progress lines.

// progressLine summarises a deployment's state for --wait, e.g.
// "deploying: 0 running, 1 pending (desired 1): starting".
func progressLine(v deploy.View) string {
	in := v.Instances
	s := fmt.Sprintf("%s: %d running, %d pending (desired %d)", v.Status, in.Running, in.Pending, in.Desired)
	if r := reason(v); r != "" {
		s += ": " + r
	}
	return s
}

// showDeployment prints one deploy object: its JSON, indented, or a table.
func showDeployment(w io.Writer, raw json.RawMessage, asJSON bool) error {
	if asJSON {
		return writeIndented(w, raw)
	}
	var v deploy.View
	if err := json.Unmarshal(raw, &v); err != nil {
		return fmt.Errorf("decode deployment: %w", err)
	}
	return writeTable(w, []deploy.View{v})
}

// writeIndented prints JSON indented by two spaces, otherwise unchanged.
func writeIndented(w io.Writer, raw []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return fmt.Errorf("server sent invalid JSON: %w", err)
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

// writeTable prints deployments as an aligned table, REASON last since it
// may be long.
func writeTable(w io.Writer, views []deploy.View) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DEPLOY_ID\tMODEL\tSTATUS\tGPU\tBATCH\tMIN/MAX\tRUNNING\tPENDING\tDESIRED\tREASON")
	for _, v := range views {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d/%d\t%d\t%d\t%d\t%s\n",
			cell(v.ID), cell(modelName(v)), cell(string(v.Status)), cell(gpuText(v.Config)),
			v.Config.MaxBatchSize, v.Settings.MinInstances, v.Settings.MaxInstances,
			v.Instances.Running, v.Instances.Pending, v.Instances.Desired, cell(reason(v)))
	}
	return tw.Flush()
}

// writeDetails prints one deployment as an aligned "key: value" block.
func writeDetails(w io.Writer, v deploy.View) error {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	row := func(k, val string) { fmt.Fprintf(tw, "%s:\t%s\n", k, cell(val)) }
	row("deploy_id", v.ID)
	row("model", modelName(v))
	row("status", string(v.Status))
	if v.FailReason != "" {
		row("fail_reason", v.FailReason)
	}
	row("gpu", gpuText(v.Config))
	row("max_batch_size", fmt.Sprint(v.Config.MaxBatchSize))
	weights := v.Config.Weights.Repo
	if r := v.Config.Weights.Revision; r != "" {
		weights += "@" + r
	}
	row("weights", weights)
	if len(v.Config.ExtraArgs) > 0 {
		row("extra_args", strings.Join(v.Config.ExtraArgs, " "))
	}
	row("min/max", fmt.Sprintf("%d/%d", v.Settings.MinInstances, v.Settings.MaxInstances))
	row("instances", fmt.Sprintf("%d running, %d pending, %d desired", v.Instances.Running, v.Instances.Pending, v.Instances.Desired))
	if v.Instances.Reason != "" {
		row("reason", v.Instances.Reason)
	}
	row("created_at", timeText(v.CreatedAt))
	row("updated_at", timeText(v.UpdatedAt))
	return tw.Flush()
}

func modelName(v deploy.View) string {
	if v.FullName != "" {
		return v.FullName
	}
	return v.ModelName
}

// gpuText reads like "1xA100-80GB".
func gpuText(c deploy.Config) string {
	if c.GPU == "" {
		return ""
	}
	return fmt.Sprintf("%dx%s", c.NumGPUs, c.GPU)
}

// reason says why a deployment is not (fully) serving: the failure, or why
// fewer instances run than are desired.
func reason(v deploy.View) string {
	if v.FailReason != "" {
		return v.FailReason
	}
	return v.Instances.Reason
}

func timeText(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Format(time.RFC3339)
}

// cell makes text safe for one table cell: one line, no tabs, "-" if empty.
func cell(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	return orDash(s)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
