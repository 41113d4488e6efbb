package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/thawhq/thaw/api"
	"github.com/thawhq/thaw/meter"
)

// UsageQuery selects a usage report. Zero fields are the server's
// defaults: this month so far, grouped by deployment, every deployment.
type UsageQuery struct {
	// From and To bound the window [From, To); zero is the server's default.
	From, To time.Time
	// GroupBy is "deployment", "gpu", "day" or "week".
	GroupBy string
	// DeployID, when set, reports one deployment (GET /deploy/{id}/usage),
	// deleted ones included.
	DeployID string
}

// Usage returns what the caller's deployments cost (GET /usage, or GET
// /deploy/{id}/usage with q.DeployID).
func (c *Client) Usage(ctx context.Context, q UsageQuery) (meter.Report, error) {
	return decode[meter.Report](c.UsageRaw(ctx, q))
}

// UsageRaw is Usage returning the server's JSON unchanged.
func (c *Client) UsageRaw(ctx context.Context, q UsageQuery) (json.RawMessage, error) {
	path := "/usage"
	if q.DeployID != "" {
		p, err := deployPath(q.DeployID)
		if err != nil {
			return nil, err
		}
		path = p + "/usage"
	}
	v := window(q.From, q.To)
	if q.GroupBy != "" {
		v.Set("group_by", q.GroupBy)
	}
	return c.do(ctx, http.MethodGet, withQuery(path, v), nil)
}

// Invoices returns the caller's weekly statements (GET /usage/invoices) of
// the weeks overlapping [from, to); zero times are the server's defaults
// (the last four weeks and this one).
func (c *Client) Invoices(ctx context.Context, from, to time.Time) (api.InvoicesView, error) {
	return decode[api.InvoicesView](c.InvoicesRaw(ctx, from, to))
}

// InvoicesRaw is Invoices returning the server's JSON unchanged.
func (c *Client) InvoicesRaw(ctx context.Context, from, to time.Time) (json.RawMessage, error) {
	return c.do(ctx, http.MethodGet, withQuery("/usage/invoices", window(from, to)), nil)
}

// InvoicesCSV is Invoices as the server's CSV (Accept: text/csv), one row
// per statement line after a header row, unchanged.
func (c *Client) InvoicesCSV(ctx context.Context, from, to time.Time) ([]byte, error) {
	return c.doAccept(ctx, http.MethodGet, withQuery("/usage/invoices", window(from, to)), "text/csv", nil)
}

// Account returns the caller's spend and spending limit (GET /account).
func (c *Client) Account(ctx context.Context) (api.AccountView, error) {
	return decode[api.AccountView](c.AccountRaw(ctx))
}

// AccountRaw is Account returning the server's JSON unchanged.
func (c *Client) AccountRaw(ctx context.Context) (json.RawMessage, error) {
	return c.do(ctx, http.MethodGet, "/account", nil)
}

// SetAccount changes the caller's spending limit or webhook (PUT
// /account): only the fields of up that are set. It returns the account
// as changed.
func (c *Client) SetAccount(ctx context.Context, up api.AccountUpdate) (api.AccountView, error) {
	return decode[api.AccountView](c.SetAccountRaw(ctx, up))
}

// SetAccountRaw is SetAccount returning the server's JSON unchanged.
func (c *Client) SetAccountRaw(ctx context.Context, up api.AccountUpdate) (json.RawMessage, error) {
	return c.do(ctx, http.MethodPut, "/account", up)
}

// Events returns what thaw told the caller (GET /account/events) at or
// after since, oldest first; a zero since is the server's default (30 days
// ago). The server sends at most the newest api.MaxEvents.
func (c *Client) Events(ctx context.Context, since time.Time) ([]meter.Event, error) {
	v, err := decode[api.EventsView](c.EventsRaw(ctx, since))
	return v.Events, err
}

// EventsRaw is Events returning the server's JSON unchanged.
func (c *Client) EventsRaw(ctx context.Context, since time.Time) (json.RawMessage, error) {
	v := url.Values{}
	if !since.IsZero() {
		v.Set("since", since.UTC().Format(time.RFC3339))
	}
	return c.do(ctx, http.MethodGet, withQuery("/account/events", v), nil)
}

// window is the from and to query parameters of the times that are set,
// RFC 3339 in UTC.
func window(from, to time.Time) url.Values {
	v := url.Values{}
	if !from.IsZero() {
		v.Set("from", from.UTC().Format(time.RFC3339))
	}
	if !to.IsZero() {
		v.Set("to", to.UTC().Format(time.RFC3339))
	}
	return v
}

func withQuery(path string, v url.Values) string {
	if len(v) == 0 {
		return path
	}
	return path + "?" + v.Encode()
}

// decode decodes a JSON answer into a T, passing err through.
func decode[T any](raw json.RawMessage, err error) (T, error) {
	var v T
	if err != nil {
		return v, err
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, fmt.Errorf("decode %T: %w", v, err)
	}
	return v, nil
}
