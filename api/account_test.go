package api

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/thawhq/thaw/meter"
	"github.com/thawhq/thaw/spend"
)

// capped caps alice at 100 USD a month; bob is not capped.
var capped = spend.Policy{Caps: map[string]float64{"alice": 100}}

// account decodes GET or PUT /account's body, failing unless status is 200
// or the body carries the webhook secret.
func (r response) account(t *testing.T) AccountView {
	t.Helper()
	v := decodeOK[AccountView](t, r)
	if strings.Contains(string(r.body), "webhook_secret") || strings.Contains(string(r.body), "s3cret") {
		t.Errorf("the account shows its webhook secret: %s", r.body)
	}
	return v
}

func fp(v float64) *float64 { return &v }

// TestAccountGet: spend this week and this month, the limit (the cap while
// the user set none) and the cap, what running instances burn, when the
// limit is reached at that rate, whether the user is blocked.
func TestAccountGet(t *testing.T) {
	h := newMeterHarness(t, meterConfig{policy: capped})
	h.seed()
	h.blocker.blocked["bob"] = "monthly spending limit reached: 15.00 USD spent of 15.00 USD"

	got := h.do("alice", http.MethodGet, "/account", nil).account(t)
	// This week (from Monday 16 November): a 2 h + 1 h so far on 2 GPUs
	// (9 USD), b 1 h (2.40); this month 20.40; a-4 burns 2 x 1.5 USD an
	// hour: the 100 USD cap is reached in 79.6 / 3 hours, 26 h 32 min.
	want := AccountView{
		Owner: "alice", SpentThisWeekUSD: 11.4, SpentThisMonthUSD: 20.4,
		SpendingLimitUSD: 100, SpendingCapUSD: fp(100), BurnUSDPerHour: 3,
		LimitReachedAt: tp(meterNow.Add(26*time.Hour + 32*time.Minute)),
	}
	approxTime := cmp.Comparer(func(a, b time.Time) bool { return a.Sub(b).Abs() <= time.Second })
	if diff := cmp.Diff(want, got, approxTime); diff != "" {
		t.Errorf("alice's GET /account (-want +got):\n%s", diff)
	}

	r := h.do("bob", http.MethodGet, "/account", nil)
	var raw map[string]any
	if err := json.Unmarshal(r.body, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"spending_limit_cap_usd", "limit_reached_at"} {
		if v, ok := raw[k]; !ok || v != nil {
			t.Errorf("bob's %s = %v (present %v), want null: no cap, no limit", k, v, ok)
		}
	}
	wantBob := AccountView{Owner: "bob", SpentThisWeekUSD: 15, SpentThisMonthUSD: 15,
		Blocked: true, BlockedReason: "monthly spending limit reached: 15.00 USD spent of 15.00 USD"}
	if diff := cmp.Diff(wantBob, r.account(t)); diff != "" {
		t.Errorf("bob's GET /account (-want +got):\n%s", diff)
	}
}

// TestAccountNotified: the threshold already announced is this month's
// only.
func TestAccountNotified(t *testing.T) {
	for _, tt := range []struct {
		month time.Time
		want  int
	}{{at(11, 1, 0, 0), 80}, {at(10, 1, 0, 0), 0}} {
		h := newMeterHarness(t, meterConfig{})
		ctx := context.Background()
		if err := h.ledger.PutAccount(ctx, meter.Account{Owner: "alice", SpendingLimitUSD: 10}); err != nil {
			t.Fatal(err)
		}
		if _, err := h.ledger.MarkNotified(ctx, "alice", tt.month, 80); err != nil {
			t.Fatal(err)
		}
		if got := h.do("alice", http.MethodGet, "/account", nil).account(t).NotifiedPercent; got != tt.want {
			t.Errorf("80%% notified in the month of %s: notified_percent %d, want %d", tt.month.Format(time.DateOnly), got, tt.want)
		}
	}
}

// TestAccountPut: a user sets their limit and webhook, within the
// operator's cap; a refused change changes nothing.
func TestAccountPut(t *testing.T) {
	h := newMeterHarness(t, meterConfig{policy: capped})
	h.seed()

	got := h.do("alice", http.MethodPut, "/account",
		`{"spending_limit_usd": 50, "webhook_url": "https://hooks.example.com/thaw", "webhook_secret": "s3cret"}`).account(t)
	if got.SpendingLimitUSD != 50 || got.WebhookURL != "https://hooks.example.com/thaw" || got.SpentThisMonthUSD != 20.4 {
		t.Errorf("PUT /account answered %+v, want limit 50, the webhook and this month's spend", got)
	}
	// (50 - 20.4) / 3 USD an hour: 9 h 52 min.
	if at := got.LimitReachedAt; at == nil || at.Sub(meterNow.Add(9*time.Hour+52*time.Minute)).Abs() > time.Second {
		t.Errorf("limit_reached_at = %v, want now + 9h52m", at)
	}
	acct, err := h.ledger.Account(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if acct.WebhookSecret != "s3cret" {
		t.Errorf("stored webhook secret %q, want s3cret (webhooks are signed with it)", acct.WebhookSecret)
	}
	// A field left out keeps its value.
	got = h.do("alice", http.MethodPut, "/account", `{"spending_limit_usd": 25}`).account(t)
	if got.SpendingLimitUSD != 25 || got.WebhookURL != "https://hooks.example.com/thaw" {
		t.Errorf("PUT of the limit only: %+v, want limit 25 and the webhook kept", got)
	}
	if acct, _ := h.ledger.Account(context.Background(), "alice"); acct.WebhookSecret != "s3cret" {
		t.Errorf("PUT of the limit only dropped the webhook secret")
	}
	if got := h.do("alice", http.MethodPut, "/account", `{"webhook_url": ""}`).account(t); got.WebhookURL != "" || got.SpendingLimitUSD != 25 {
		t.Errorf(`PUT {"webhook_url": ""}: %+v, want no webhook and limit 25`, got)
	}
	// An uncapped user may remove their limit, or set any.
	if got := h.do("bob", http.MethodPut, "/account", `{"spending_limit_usd": 1000000}`).account(t); got.SpendingLimitUSD != 1e6 || got.SpendingCapUSD != nil {
		t.Errorf("bob's limit of 1e6: %+v", got)
	}
	if got := h.do("bob", http.MethodPut, "/account", `{"spending_limit_usd": 0}`).account(t); got.SpendingLimitUSD != 0 || got.LimitReachedAt != nil {
		t.Errorf("bob's limit removed: %+v, want no limit and no forecast", got)
	}
}

func TestAccountPutRefused(t *testing.T) {
	h := newMeterHarness(t, meterConfig{policy: capped})
	tests := []struct {
		name, user, body   string
		status             int
		code, param, inMsg string
	}{
		{"above the cap", "alice", `{"spending_limit_usd": 150}`, 422, "invalid_value", "spending_limit_usd",
			"spending_limit_usd 150.00 is above the operator's cap for you, 100.00 USD a month"},
		{"none while capped", "alice", `{"spending_limit_usd": 0}`, 422, "invalid_value", "spending_limit_usd",
			"the operator requires a spending limit for you: at most 100.00 USD a month"},
		{"negative", "bob", `{"spending_limit_usd": -5}`, 422, "invalid_value", "spending_limit_usd",
			"spending_limit_usd must be 0 (no limit) or positive, got -5"},
		{"unknown field", "bob", `{"spending_limit": 5}`, 400, "invalid_json", "", `unknown field "spending_limit"`},
		{"not a number", "bob", `{"spending_limit_usd": "5"}`, 400, "invalid_json", "", "spending_limit_usd"},
		{"not JSON", "bob", `limit=5`, 400, "invalid_json", "", "want a JSON object with spending_limit_usd"},
		{"webhook not http", "bob", `{"webhook_url": "ftp://hooks.example.com/x"}`, 422, "invalid_value", "webhook_url",
			`webhook_url "ftp://hooks.example.com/x": want an absolute http or https URL, or "" for none`},
		{"webhook relative", "bob", `{"webhook_url": "/hook"}`, 422, "invalid_value", "webhook_url", "want an absolute http or https URL"},
		{"webhook no host", "bob", `{"webhook_url": "https://"}`, 422, "invalid_value", "webhook_url", "want an absolute http or https URL"},
		{"a valid limit with a bad webhook", "bob", `{"spending_limit_usd": 5, "webhook_url": "nope"}`, 422, "invalid_value", "webhook_url", "nope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := h.do(tt.user, http.MethodGet, "/account", nil).account(t)
			e := h.do(tt.user, http.MethodPut, "/account", tt.body).err(t)
			if e.Status != tt.status || e.Code != tt.code || deref(e.Param) != orNull(tt.param) || !strings.Contains(e.Message, tt.inMsg) {
				t.Errorf("PUT %s: %d %s param %s %q; want %d %s param %s %q",
					tt.body, e.Status, e.Code, deref(e.Param), e.Message, tt.status, tt.code, orNull(tt.param), tt.inMsg)
			}
			after := h.do(tt.user, http.MethodGet, "/account", nil).account(t)
			if diff := cmp.Diff(before, after, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("a refused PUT changed the account (-before +after):\n%s", diff)
			}
		})
	}
}

func orNull(s string) string {
	if s == "" {
		return "<null>"
	}
	return s
}

// TestAccountEvents: GET /account/events is the caller's events since
// ?since= (default 30 days ago), oldest first, the newest 200 at most.
func TestAccountEvents(t *testing.T) {
	h := newMeterHarness(t, meterConfig{})
	ctx := context.Background()
	add := func(owner string, at time.Time, typ, msg string, detail string) {
		t.Helper()
		e := meter.Event{Owner: owner, At: at, Type: typ, Message: msg}
		if detail != "" {
			e.Detail = json.RawMessage(detail)
		}
		if err := h.ledger.AddEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	events := func(user, query string) (EventsView, string) {
		t.Helper()
		r := h.do(user, http.MethodGet, "/account/events"+query, nil)
		if r.status != http.StatusOK {
			t.Fatalf("GET /account/events%s: %d %s", query, r.status, r.body)
		}
		var v EventsView
		if err := json.Unmarshal(r.body, &v); err != nil {
			t.Fatal(err)
		}
		return v, string(r.body)
	}

	if _, body := events("alice", ""); !strings.Contains(body, `"events": []`) {
		t.Errorf("no events: %s, want an empty array", body)
	}

	add("alice", meterNow.Add(-40*24*time.Hour), "spending.threshold", "50% of the monthly spending limit reached", "")
	add("alice", at(11, 17, 9, 0), "spending.threshold", "80% of the monthly spending limit reached: 8.00 USD spent of 10.00 USD",
		`{"threshold":80,"spent_usd":8,"limit_usd":10}`)
	add("alice", at(11, 18, 11, 0), "deployment.idle", "running idle for 61 h: 244 USD so far", "")
	add("bob", at(11, 18, 11, 30), "spending.threshold", "bob's", "")

	got, _ := events("alice", "")
	want := []meter.Event{
		{At: at(11, 17, 9, 0), Type: "spending.threshold", Message: "80% of the monthly spending limit reached: 8.00 USD spent of 10.00 USD",
			Detail: json.RawMessage(`{"threshold":80,"spent_usd":8,"limit_usd":10}`)},
		{At: at(11, 18, 11, 0), Type: "deployment.idle", Message: "running idle for 61 h: 244 USD so far"},
	}
	compact := cmp.Transformer("compact", func(m json.RawMessage) string {
		var b bytes.Buffer
		if err := json.Compact(&b, m); err != nil {
			return string(m)
		}
		return b.String()
	})
	if diff := cmp.Diff(want, got.Events, compact); diff != "" {
		t.Errorf("alice's events of the last 30 days (-want +got):\n%s", diff)
	}
	if got, _ := events("alice", "?since=2026-01-01T00:00:00Z"); len(got.Events) != 3 {
		t.Errorf("alice's events since January: %d, want 3", len(got.Events))
	}
	if got, _ := events("alice", "?since=2026-11-18T11:00:00Z"); len(got.Events) != 1 || got.Events[0].Type != "deployment.idle" {
		t.Errorf("alice's events since 11:00 today (inclusive): %+v", got.Events)
	}
	if got, _ := events("bob", ""); len(got.Events) != 1 || got.Events[0].Message != "bob's" {
		t.Errorf("bob's events: %+v, want his one", got.Events)
	}

	e := h.do("alice", http.MethodGet, "/account/events?since=last-week", nil).err(t)
	if e.Status != http.StatusBadRequest || e.Code != "invalid_time" || deref(e.Param) != "since" ||
		e.Message != `since="last-week" is not an RFC 3339 time, e.g. 2026-11-02T00:00:00Z` {
		t.Errorf("?since=last-week: %+v, want 400 invalid_time param since", e)
	}

	for i := range MaxEvents + 5 {
		add("bob", at(11, 1, 0, 0).Add(time.Duration(i)*time.Minute), "n", "", "")
	}
	got, _ = events("bob", "")
	if n := len(got.Events); n != MaxEvents {
		t.Fatalf("bob has %d events: got %d, want the newest %d", MaxEvents+6, n, MaxEvents)
	}
	if first, last := got.Events[0], got.Events[MaxEvents-1]; !first.At.Equal(at(11, 1, 0, 6)) || last.Message != "bob's" {
		t.Errorf("bob's %d events run from %s to %q, want from the 7th (00:06) to the newest", MaxEvents, first.At, last.Message)
	}
}
