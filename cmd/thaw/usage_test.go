package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/thawhq/thaw/api"
	"github.com/thawhq/thaw/auth"
	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/internal/metertest"
	"github.com/thawhq/thaw/meter"
	"github.com/thawhq/thaw/spend"
)

// usageNow is the metered server's now: Wednesday 18 November 2026 noon
// UTC, in the billing week that began on Monday the 16th.
var usageNow = time.Date(2026, 11, 18, 12, 0, 0, 0, time.UTC)

// meteredServer is the real deploy, usage and account API over a SQLite
// ledger at usageNow, for user "dev" (testToken), capped at 99 USD a
// month, with A100-80GB at 1.5 USD an hour. THAW_ADDR and THAW_TOKEN point
// at it.
type meteredServer struct {
	ledger *meter.Store
	store  *deploy.Store
	d      deploy.Deployment // dev's "llama", 2 x A100-80GB

	mu      sync.Mutex // mu guards blocked.
	blocked string
}

func (s *meteredServer) Blocked(string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.blocked, s.blocked != ""
}

// Live reports every deployment running.
func (s *meteredServer) Live(d deploy.Deployment) deploy.Live {
	return deploy.Live{Status: deploy.StatusRunning}
}

// startMetered serves the metered API with llama's history: Tue 17 Nov
// 10:00-12:00 (ready 10:06; 5 requests, 100 prompt and 200 completion
// tokens) and since Wed 18 Nov 11:00 (ready 11:30), still running: 6
// GPU-hours so far, 1.2 of them loading, 9 USD.
func startMetered(t *testing.T) *meteredServer {
	t.Helper()
	ctx := context.Background()
	s := &meteredServer{}
	s.store, s.ledger = metertest.Open(t)
	var err error
	s.d, err = s.store.Create(deploy.Deployment{Owner: "dev", ModelName: "llama",
		Config: deploy.Config{GPU: "A100-80GB", NumGPUs: 2, MaxBatchSize: 8}, Settings: deploy.Settings{MaxInstances: 1}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	day := func(d, h, m int) time.Time { return time.Date(2026, 11, d, h, m, 0, 0, time.UTC) }
	for _, f := range []meter.Fact{
		{InstanceID: "i-1", Kind: meter.KindHeld, At: day(17, 10, 0)},
		{InstanceID: "i-1", Kind: meter.KindReady, At: day(17, 10, 6)},
		{InstanceID: "i-1", Kind: meter.KindReleased, At: day(17, 12, 0), Reason: "stopped"},
		{InstanceID: "i-2", Kind: meter.KindHeld, At: day(18, 11, 0)},
		{InstanceID: "i-2", Kind: meter.KindReady, At: day(18, 11, 30)},
	} {
		f.DeployID, f.Owner, f.Model, f.GPU, f.NumGPUs = s.d.ID, "dev", "dev/llama", "A100-80GB", 2
		if err := s.ledger.Record(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	err = s.ledger.AddTokens(ctx, meter.Tokens{DeployID: s.d.ID, Owner: "dev", Hour: day(17, 10, 0), Requests: 5, PromptTokens: 100, CompletionTokens: 200})
	if err != nil {
		t.Fatal(err)
	}

	now := func() time.Time { return usageNow }
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	prices := meter.Prices{"A100-80GB": 1.5}
	serveAPI(t, api.Config{Store: s.store, Live: s, Now: now, Logger: log,
		Ledger: s.ledger, Prices: prices, Blocker: s, Policy: spend.Policy{Caps: map[string]float64{"dev": 99}}})
	return s
}

// serveAPI serves the deploy API made from cfg to user "dev" until the test
// ends, and points THAW_ADDR and THAW_TOKEN at it.
func serveAPI(t *testing.T, cfg api.Config) {
	t.Helper()
	a, err := api.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	a.Register(mux, auth.NewUsers(map[string]string{"dev": testToken}).Require)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	t.Setenv("THAW_TOKEN", testToken)
	t.Setenv("THAW_ADDR", srv.URL)
}

// thaw runs the thaw command line and returns what it printed.
func thaw(t *testing.T, args ...string) (stdout string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = runMain(ctx, args, &out, &errOut)
	return out.String(), err
}

// details parses "key: value" lines.
func details(out string) map[string]string {
	m := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, _ := strings.Cut(l, ":")
		m[k] = strings.TrimSpace(v)
	}
	return m
}

// usageTable checks the window line of thaw usage and returns its table.
func usageTable(t *testing.T, out, window string) []map[string]string {
	t.Helper()
	first, rest, _ := strings.Cut(out, "\n\n")
	if first != "usage from "+window {
		t.Errorf("first line %q, want %q", first, "usage from "+window)
	}
	return table(t, rest)
}

func TestUsageTable(t *testing.T) {
	s := startMetered(t)
	total := map[string]string{"GPU_HOURS": "6.000", "LOADING_HOURS": "1.200", "COST_USD": "9.00", "REQUESTS": "5",
		"PROMPT_TOKENS": "100", "COMPLETION_TOKENS": "200"}
	with := func(m map[string]string, kv ...string) map[string]string {
		out := map[string]string{}
		for k, v := range m {
			out[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	tests := []struct {
		name   string
		args   []string
		window string
		want   []map[string]string
	}{{
		name: "this month by deployment", args: []string{"usage"}, window: "2026-11-01T00:00:00Z to 2026-11-18T12:00:00Z",
		want: []map[string]string{
			with(total, "DEPLOY_ID", s.d.ID, "MODEL", "dev/llama", "GPU", "2xA100-80GB"),
			with(total, "DEPLOY_ID", "TOTAL", "MODEL", "-", "GPU", "-"),
		},
	}, {
		name: "by day", args: []string{"usage", "--group-by", "day"}, window: "2026-11-01T00:00:00Z to 2026-11-18T12:00:00Z",
		want: []map[string]string{
			{"DAY": "2026-11-17", "GPU_HOURS": "4.000", "LOADING_HOURS": "0.200", "COST_USD": "6.00", "REQUESTS": "5", "PROMPT_TOKENS": "100", "COMPLETION_TOKENS": "200"},
			{"DAY": "2026-11-18", "GPU_HOURS": "2.000", "LOADING_HOURS": "1.000", "COST_USD": "3.00", "REQUESTS": "0", "PROMPT_TOKENS": "0", "COMPLETION_TOKENS": "0"},
			with(total, "DAY", "TOTAL"),
		},
	}, {
		name: "by gpu, from a date", args: []string{"usage", "--group-by=gpu", "--from", "2026-11-18"}, window: "2026-11-18T00:00:00Z to 2026-11-18T12:00:00Z",
		want: []map[string]string{
			{"GPU": "A100-80GB", "GPU_HOURS": "2.000", "LOADING_HOURS": "1.000", "COST_USD": "3.00", "REQUESTS": "0", "PROMPT_TOKENS": "0", "COMPLETION_TOKENS": "0"},
			{"GPU": "TOTAL", "GPU_HOURS": "2.000", "LOADING_HOURS": "1.000", "COST_USD": "3.00", "REQUESTS": "0", "PROMPT_TOKENS": "0", "COMPLETION_TOKENS": "0"},
		},
	}, {
		name: "one deployment by name, a window with offsets", args: []string{"usage", "--deployment", "llama", "--from", "2026-11-17T11:00:00+01:00", "--to", "2026-11-17T11:00:00Z"},
		window: "2026-11-17T10:00:00Z to 2026-11-17T11:00:00Z",
		want: []map[string]string{
			{"DEPLOY_ID": s.d.ID, "MODEL": "dev/llama", "GPU": "2xA100-80GB", "GPU_HOURS": "2.000", "LOADING_HOURS": "0.200", "COST_USD": "3.00", "REQUESTS": "5", "PROMPT_TOKENS": "100", "COMPLETION_TOKENS": "200"},
			{"DEPLOY_ID": "TOTAL", "MODEL": "-", "GPU": "-", "GPU_HOURS": "2.000", "LOADING_HOURS": "0.200", "COST_USD": "3.00", "REQUESTS": "5", "PROMPT_TOKENS": "100", "COMPLETION_TOKENS": "200"},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := thaw(t, tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, usageTable(t, out, tt.window)); diff != "" {
				t.Errorf("thaw %s (-want +got):\n%s\n%s", strings.Join(tt.args, " "), diff, out)
			}
		})
	}

	out, err := thaw(t, "usage", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var rep meter.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Total.CostUSD != 9 || !strings.HasPrefix(out, "{\n  \"from\": ") {
		t.Errorf("usage --json printed %q (%v), want the server's report, indented", out, err)
	}

	// A deleted deployment's usage, by its id.
	if err := s.store.Delete(s.d.ID); err != nil {
		t.Fatal(err)
	}
	out, err = thaw(t, "usage", "--deployment", s.d.ID)
	if err != nil {
		t.Fatal(err)
	}
	if rows := usageTable(t, out, "2026-11-01T00:00:00Z to 2026-11-18T12:00:00Z"); len(rows) != 2 || rows[1]["COST_USD"] != "9.00" {
		t.Errorf("usage of the deleted deployment:\n%s", out)
	}
}

// TestUsageErrors: what the user sees of a bad flag and of the server's
// refusals.
func TestUsageErrors(t *testing.T) {
	startMetered(t)
	tests := []struct {
		args []string
		err  string
	}{
		{[]string{"usage", "--from", "yesterday"}, `thaw usage: invalid value "yesterday" for flag -from: want an RFC 3339 time (2026-11-02T00:00:00Z) or a date (2026-11-02)`},
		{[]string{"usage", "--group-by", "month"}, `400 invalid_group_by: unknown group_by "month", want one of deployment, gpu, day, week`},
		{[]string{"usage", "--from", "2026-11-10", "--to", "2026-11-09"}, "400 invalid_window: from must be before to"},
		{[]string{"usage", "--deployment", "nope"}, `404 deployment_not_found: deployment "nope" not found (param deploy_id)`},
		{[]string{"usage", "extra"}, `thaw usage: unexpected argument "extra"`},
		{[]string{"usage", "invoices", "--csv", "--json"}, "thaw usage invoices: --csv and --json: choose one"},
		{[]string{"account", "set"}, "thaw account set: nothing to change: give --spending-limit, --webhook-url and/or --webhook-secret"},
		{[]string{"account", "set", "--spending-limit", "lots"}, `thaw account set: --spending-limit "lots": want a number of USD, e.g. 100 or 0 for none`},
		{[]string{"account", "set", "--spending-limit", "150"}, "422 invalid_value: spending_limit_usd 150.00 is above the operator's cap for you, 99.00 USD a month"},
		{[]string{"account", "set", "--spending-limit", "0"}, "422 invalid_value: the operator requires a spending limit for you: at most 99.00 USD a month (param spending_limit_usd)"},
		{[]string{"account", "set", "--webhook-url", "hooks.example.com"}, `422 invalid_value: webhook_url "hooks.example.com": want an absolute http or https URL, or "" for none`},
		{[]string{"account", "events", "--since", "now"}, `thaw account events: invalid value "now" for flag -since: want an RFC 3339 time (2026-11-02T00:00:00Z) or a date (2026-11-02)`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			out, err := thaw(t, tt.args...)
			if err == nil || err.Error() != tt.err {
				t.Errorf("err = %v, want %s", err, tt.err)
			}
			if out != "" {
				t.Errorf("printed %q on an error", out)
			}
		})
	}
	t.Setenv("THAW_TOKEN", "")
	if _, err := thaw(t, "account"); err == nil || !strings.Contains(err.Error(), "THAW_TOKEN is not set") {
		t.Errorf("account without a token: err = %v", err)
	}
}

func TestUsageInvoices(t *testing.T) {
	s := startMetered(t)
	out, err := thaw(t, "usage", "invoices")
	if err != nil {
		t.Fatal(err)
	}
	title, rest, _ := strings.Cut(out, "\n")
	if title != "week 2026-11-16 to 2026-11-23 (open: the week is not over)" {
		t.Errorf("title %q", title)
	}
	tbl, total, _ := strings.Cut(rest, "\ntotal ")
	want := []map[string]string{{"DEPLOY_ID": s.d.ID, "MODEL": "dev/llama", "GPU": "A100-80GB", "GPU_HOURS": "6.000", "RATE_USD": "1.5", "AMOUNT_USD": "9.00"}}
	if diff := cmp.Diff(want, table(t, tbl)); diff != "" {
		t.Errorf("statement lines (-want +got):\n%s\n%s", diff, out)
	}
	if total != "9.00 USD\n" {
		t.Errorf("total line %q, want 9.00 USD", total)
	}

	out, err = thaw(t, "usage", "invoices", "--csv")
	if err != nil {
		t.Fatal(err)
	}
	wantCSV := "week_start,week_end,final,deploy_id,model,gpu,gpu_hours,rate_usd,amount_usd\n" +
		"2026-11-16,2026-11-23,false," + s.d.ID + ",dev/llama,A100-80GB,6.000000,1.5,9.00\n"
	if out != wantCSV {
		t.Errorf("invoices --csv printed\n%s\nwant the server's CSV\n%s", out, wantCSV)
	}

	out, err = thaw(t, "usage", "invoices", "--from", "2026-09-01", "--to", "2026-10-01")
	if err != nil || out != "no GPU time in the weeks from 2026-08-31 to 2026-10-01T00:00:00Z\n" {
		t.Errorf("invoices of September: %q, %v", out, err)
	}
}

func TestAccount(t *testing.T) {
	s := startMetered(t)
	out, err := thaw(t, "account")
	if err != nil {
		t.Fatal(err)
	}
	// 9 USD spent, 3 USD an hour: the 99 USD cap in 30 hours.
	want := map[string]string{
		"owner": "dev", "spent this week": "9.00 USD", "spent this month": "9.00 USD",
		"spending limit": "99.00 USD a month (the operator's cap: 99.00 USD)", "burn rate": "3.00 USD an hour",
		"limit reached": "2026-11-19T18:00:00Z at this rate", "blocked": "no", "webhook": "-",
	}
	if diff := cmp.Diff(want, details(out)); diff != "" {
		t.Errorf("thaw account (-want +got):\n%s\n%s", diff, out)
	}
	if !strings.Contains(out, "spent this month: 9.00 USD\n") {
		t.Errorf("values are not aligned after the longest key:\n%s", out)
	}

	out, err = thaw(t, "account", "set", "--spending-limit", "30", "--webhook-url", "https://hooks.example.com/thaw", "--webhook-secret", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	got := details(out)
	if got["spending limit"] != "30.00 USD a month (the operator's cap: 99.00 USD)" || got["limit reached"] != "2026-11-18T19:00:00Z at this rate" ||
		got["webhook"] != "https://hooks.example.com/thaw" || strings.Contains(out, "s3cret") {
		t.Errorf("account set printed:\n%s", out)
	}
	if acct, err := s.ledger.Account(context.Background(), "dev"); err != nil || acct.WebhookSecret != "s3cret" || acct.SpendingLimitUSD != 30 {
		t.Errorf("stored account %+v, %v; want limit 30 and the secret", acct, err)
	}

	s.mu.Lock()
	s.blocked = "monthly spending limit reached: 30.00 USD spent of 30.00 USD"
	s.mu.Unlock()
	out, err = thaw(t, "account", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var v api.AccountView
	if err := json.Unmarshal([]byte(out), &v); err != nil || !v.Blocked || v.SpendingLimitUSD != 30 {
		t.Errorf("account --json printed %s (%v), want the server's JSON, blocked", out, err)
	}
	out, _ = thaw(t, "account")
	if got := details(out)["blocked"]; got != "yes: monthly spending limit reached: 30.00 USD spent of 30.00 USD" {
		t.Errorf("blocked: %q", got)
	}
}

func TestAccountEvents(t *testing.T) {
	s := startMetered(t)
	if out, err := thaw(t, "account", "events"); err != nil || out != "no events\n" {
		t.Errorf("no events: %q, %v", out, err)
	}
	ctx := context.Background()
	for _, e := range []meter.Event{
		{Owner: "dev", At: time.Date(2026, 11, 17, 9, 0, 0, 0, time.UTC), Type: "spending.threshold", Message: "50% of the monthly spending limit reached: 15.00 USD spent of 30.00 USD"},
		{Owner: "dev", At: time.Date(2026, 11, 18, 9, 0, 0, 0, time.UTC), Type: "deployment.idle", DeployID: s.d.ID, Message: "running idle for 61 h: 244 USD so far"},
	} {
		if err := s.ledger.AddEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	out, err := thaw(t, "account", "events")
	if err != nil {
		t.Fatal(err)
	}
	want := []map[string]string{
		{"AT": "2026-11-17T09:00:00Z", "TYPE": "spending.threshold", "DEPLOY_ID": "-", "MESSAGE": "50% of the monthly spending limit reached: 15.00 USD spent of 30.00 USD"},
		{"AT": "2026-11-18T09:00:00Z", "TYPE": "deployment.idle", "DEPLOY_ID": s.d.ID, "MESSAGE": "running idle for 61 h: 244 USD so far"},
	}
	if diff := cmp.Diff(want, table(t, out)); diff != "" {
		t.Errorf("account events (-want +got):\n%s\n%s", diff, out)
	}
	out, err = thaw(t, "account", "events", "--since", "2026-11-18", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var v api.EventsView
	if err := json.Unmarshal([]byte(out), &v); err != nil || len(v.Events) != 1 || v.Events[0].Type != "deployment.idle" {
		t.Errorf("events --since --json printed %s (%v), want the idle event only", out, err)
	}
}

func TestHelpNamesUsageAndAccount(t *testing.T) {
	out, err := thaw(t, "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"thaw usage [invoices]", "thaw account [set|events]"} {
		if !strings.Contains(out, want) {
			t.Errorf("thaw --help lacks %q:\n%s", want, out)
		}
	}
	var errOut bytes.Buffer
	if err := runMain(context.Background(), []string{"usage", "-h"}, io.Discard, &errOut); err != nil ||
		!strings.Contains(errOut.String(), "usage: thaw usage [--from TIME]") || !strings.Contains(errOut.String(), "-group-by") {
		t.Errorf("thaw usage -h: %v\n%s", err, errOut.String())
	}
}
