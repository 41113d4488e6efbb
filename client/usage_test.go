package client

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
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

// TestUsageRequests: what each usage and account method sends.
func TestUsageRequests(t *testing.T) {
	ctx := context.Background()
	from, to := time.Date(2026, 11, 2, 1, 0, 0, 0, time.FixedZone("CET", 3600)), time.Date(2026, 11, 9, 0, 0, 0, 0, time.UTC)
	limit, hook := 50.0, ""
	tests := []struct {
		name string
		call func(c *Client) error
		want seen
	}{{
		name: "usage, defaults",
		call: func(c *Client) error { _, err := c.Usage(ctx, UsageQuery{}); return err },
		want: seen{Method: "GET", Path: "/usage", Auth: "Bearer tok-1"},
	}, {
		name: "usage, window in UTC and grouping",
		call: func(c *Client) error {
			_, err := c.Usage(ctx, UsageQuery{From: from, To: to, GroupBy: "day"})
			return err
		},
		want: seen{Method: "GET", Path: "/usage", Query: "from=2026-11-02T00%3A00%3A00Z&group_by=day&to=2026-11-09T00%3A00%3A00Z", Auth: "Bearer tok-1"},
	}, {
		name: "one deployment's usage",
		call: func(c *Client) error { _, err := c.Usage(ctx, UsageQuery{DeployID: "d/1", To: to}); return err },
		want: seen{Method: "GET", Path: "/deploy/d%2F1/usage", Query: "to=2026-11-09T00%3A00%3A00Z", Auth: "Bearer tok-1"},
	}, {
		name: "invoices",
		call: func(c *Client) error { _, err := c.Invoices(ctx, from, time.Time{}); return err },
		want: seen{Method: "GET", Path: "/usage/invoices", Query: "from=2026-11-02T00%3A00%3A00Z", Auth: "Bearer tok-1"},
	}, {
		name: "account",
		call: func(c *Client) error { _, err := c.Account(ctx); return err },
		want: seen{Method: "GET", Path: "/account", Auth: "Bearer tok-1"},
	}, {
		name: "set account sends only the fields given",
		call: func(c *Client) error {
			_, err := c.SetAccount(ctx, api.AccountUpdate{SpendingLimitUSD: &limit, WebhookURL: &hook})
			return err
		},
		want: seen{Method: "PUT", Path: "/account", Auth: "Bearer tok-1", Body: `{"spending_limit_usd":50,"webhook_url":""}`},
	}, {
		name: "events, default",
		call: func(c *Client) error { _, err := c.Events(ctx, time.Time{}); return err },
		want: seen{Method: "GET", Path: "/account/events", Auth: "Bearer tok-1"},
	}, {
		name: "events since",
		call: func(c *Client) error { _, err := c.Events(ctx, from); return err },
		want: seen{Method: "GET", Path: "/account/events", Query: "since=2026-11-02T00%3A00%3A00Z", Auth: "Bearer tok-1"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, f := start(t, 200, `{}`)
			if err := tt.call(c); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]seen{tt.want}, f.requests()); diff != "" {
				t.Errorf("requests (-want +got):\n%s", diff)
			}
		})
	}
}

// usageServer serves the real usage and account handlers over a SQLite
// ledger at a fixed now, with alice capped at 100 USD a month.
type usageServer struct {
	ledger *meter.Store
	store  *deploy.Store
	url    string
	now    time.Time
}

func startUsageServer(t *testing.T) *usageServer {
	t.Helper()
	store, ledger := metertest.Open(t)
	s := &usageServer{ledger: ledger, store: store, now: time.Date(2026, 11, 18, 12, 0, 0, 0, time.UTC)}
	now := func() time.Time { return s.now }
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	prices := meter.Prices{"A100-80GB": 1.5}
	a, err := api.New(api.Config{Store: store, Live: noLive{}, Now: now, Logger: log,
		Ledger: ledger, Prices: prices, Blocker: noBlocks{}, Policy: spend.Policy{Caps: map[string]float64{"alice": 100}}})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	a.Register(mux, auth.NewUsers(map[string]string{"alice": "tok-alice"}).Require)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	s.url = srv.URL
	return s
}

type noBlocks struct{}

func (noBlocks) Blocked(string) (string, bool) { return "", false }

// TestUsageAgainstTheAPI: the client reads what the real handlers write,
// and a refusal comes back as the server's message.
func TestUsageAgainstTheAPI(t *testing.T) {
	s := startUsageServer(t)
	ctx := context.Background()
	d, err := s.store.Create(deploy.Deployment{Owner: "alice", ModelName: "m",
		Config: deploy.Config{GPU: "A100-80GB", NumGPUs: 2}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 11, 17, 10, 0, 0, 0, time.UTC)
	for _, f := range []meter.Fact{
		{Kind: meter.KindHeld, At: start},
		{Kind: meter.KindReady, At: start.Add(6 * time.Minute)},
		{Kind: meter.KindReleased, At: start.Add(2 * time.Hour)},
	} {
		f.InstanceID, f.DeployID, f.Owner, f.Model, f.GPU, f.NumGPUs = "i-1", d.ID, "alice", "alice/m", "A100-80GB", 2
		if err := s.ledger.Record(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	c := New(s.url, "tok-alice")

	rep, err := c.Usage(ctx, UsageQuery{DeployID: d.ID, GroupBy: "gpu"})
	if err != nil {
		t.Fatal(err)
	}
	want := meter.Report{From: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), To: s.now,
		Items: []meter.Item{{GPU: "A100-80GB", GPUSeconds: 14400, LoadingSeconds: 720, CostUSD: 6}},
		Total: meter.Item{GPUSeconds: 14400, LoadingSeconds: 720, CostUSD: 6}}
	if diff := cmp.Diff(want, rep); diff != "" {
		t.Errorf("Usage (-want +got):\n%s", diff)
	}

	inv, err := c.Invoices(ctx, time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Statements) != 1 || inv.Statements[0].TotalUSD != 6 || inv.Statements[0].Final {
		t.Errorf("Invoices = %+v, want this week's statement, 6 USD, not final", inv)
	}
	csv, err := c.InvoicesCSV(ctx, time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	wantCSV := "week_start,week_end,final,deploy_id,model,gpu,gpu_hours,rate_usd,amount_usd\n" +
		"2026-11-16,2026-11-23,false," + d.ID + ",alice/m,A100-80GB,4.000000,1.5,6.00\n"
	if diff := cmp.Diff(wantCSV, string(csv)); diff != "" {
		t.Errorf("InvoicesCSV (-want +got):\n%s", diff)
	}

	limit, secret := 150.0, "s3cret"
	_, err = c.SetAccount(ctx, api.AccountUpdate{SpendingLimitUSD: &limit, WebhookSecret: &secret})
	var apiErr *Error
	if !errors.As(err, &apiErr) || apiErr.Status != 422 ||
		err.Error() != "422 invalid_value: spending_limit_usd 150.00 is above the operator's cap for you, 100.00 USD a month" {
		t.Errorf("SetAccount above the cap: err = %v, want the server's 422", err)
	}
	limit = 10
	acct, err := c.SetAccount(ctx, api.AccountUpdate{SpendingLimitUSD: &limit, WebhookSecret: &secret})
	if err != nil {
		t.Fatal(err)
	}
	if acct.SpendingLimitUSD != 10 || acct.SpentThisWeekUSD != 6 || acct.SpendingCapUSD == nil || *acct.SpendingCapUSD != 100 {
		t.Errorf("SetAccount = %+v, want limit 10, cap 100, 6 USD this week", acct)
	}
	if got, err := c.Account(ctx); err != nil || got.SpendingLimitUSD != 10 {
		t.Errorf("Account = %+v, %v; want limit 10", got, err)
	}

	at := time.Date(2026, 11, 17, 12, 0, 0, 0, time.UTC)
	if err := s.ledger.AddEvent(ctx, meter.Event{Owner: "alice", At: at, Type: "spending.threshold", Message: "50% reached"}); err != nil {
		t.Fatal(err)
	}
	evs, err := c.Events(ctx, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]meter.Event{{At: at, Type: "spending.threshold", Message: "50% reached"}}, evs); diff != "" {
		t.Errorf("Events (-want +got):\n%s", diff)
	}
	if evs, err := c.Events(ctx, at.Add(time.Second)); err != nil || len(evs) != 0 {
		t.Errorf("Events since after the event = %v, %v; want none", evs, err)
	}
	if _, err := New(s.url, "wrong").Account(ctx); err == nil || !strings.HasPrefix(err.Error(), "401 ") {
		t.Errorf("Account with a wrong token: err = %v, want 401", err)
	}
}

// noLive: the deployments of these tests never run.
type noLive struct{}

func (noLive) Live(deploy.Deployment) deploy.Live { return deploy.Live{} }
