package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/thawhq/thaw/auth"
	"github.com/thawhq/thaw/httperr"
	"github.com/thawhq/thaw/meter"
	"github.com/thawhq/thaw/spend"
)

// Ledger is what the usage and account endpoints read and write: the
// meter's store.
type Ledger interface {
	Intervals(ctx context.Context, owner string, from, to time.Time) ([]meter.Interval, error)
	Tokens(ctx context.Context, owner string, from, to time.Time) ([]meter.Tokens, error)
	Account(ctx context.Context, owner string) (meter.Account, error)
	PutAccount(ctx context.Context, a meter.Account) error
	// Events returns owner's events at or after since, oldest first, at
	// most limit of the newest.
	Events(ctx context.Context, owner string, since time.Time, limit int) ([]meter.Event, error)
}

// Blocker tells whether a user is over their spending limit (the spending
// enforcer).
type Blocker interface {
	Blocked(owner string) (msg string, blocked bool)
}

// AccountView is GET /account's body.
type AccountView struct {
	Owner             string     `json:"owner"`
	SpentThisWeekUSD  float64    `json:"spent_this_week_usd"`
	SpentThisMonthUSD float64    `json:"spent_this_month_usd"`
	SpendingLimitUSD  float64    `json:"spending_limit_usd"`
	SpendingCapUSD    *float64   `json:"spending_limit_cap_usd"`
	BurnUSDPerHour    float64    `json:"burn_rate_usd_per_hour"`
	LimitReachedAt    *time.Time `json:"limit_reached_at"`
	Blocked           bool       `json:"blocked"`
	BlockedReason     string     `json:"blocked_reason,omitempty"`
	WebhookURL        string     `json:"webhook_url"`
	NotifiedPercent   int        `json:"notified_percent"`
}

func (a *API) getAccount(w http.ResponseWriter, r *http.Request) {
	owner := auth.User(r.Context())
	acct, err := a.cfg.Ledger.Account(r.Context(), owner)
	if err != nil {
		ledgerFailed(w, a.cfg.Logger, err)
		return
	}
	a.write(w, r.Context(), acct)
}

// write answers with acct's view as of now.
func (a *API) write(w http.ResponseWriter, ctx context.Context, acct meter.Account) {
	now := a.cfg.Now().UTC()
	month, week := spend.MonthStart(now), meter.WeekStart(now)
	from := month
	if week.Before(from) {
		from = week
	}
	ivs, err := a.cfg.Ledger.Intervals(ctx, acct.Owner, from, now)
	if err != nil {
		ledgerFailed(w, a.cfg.Logger, err)
		return
	}
	m, err1 := spend.Spent(ivs, month, now, a.cfg.Prices)
	wk, err2 := spend.Spent(ivs, week, now, a.cfg.Prices)
	if err := errors.Join(err1, err2); err != nil {
		unpriced(w, a.cfg.Logger, err)
		return
	}
	v := AccountView{
		Owner:             acct.Owner,
		SpentThisWeekUSD:  spend.Round2(wk[acct.Owner].SpentUSD),
		SpentThisMonthUSD: spend.Round2(m[acct.Owner].SpentUSD),
		SpendingLimitUSD:  a.cfg.Policy.Effective(acct),
		BurnUSDPerHour:    spend.Round2(m[acct.Owner].BurnUSDPerHour),
		WebhookURL:        acct.WebhookURL,
	}
	if acct.NotifiedMonth.Equal(month) {
		v.NotifiedPercent = acct.Notified
	}
	if c, ok := a.cfg.Policy.Cap(acct.Owner); ok {
		v.SpendingCapUSD = &c
	}
	if at := spend.Forecast(m[acct.Owner].SpentUSD, v.SpendingLimitUSD, m[acct.Owner].BurnUSDPerHour, now); !at.IsZero() {
		v.LimitReachedAt = &at
	}
	v.BlockedReason, v.Blocked = a.cfg.Blocker.Blocked(acct.Owner)
	writeJSON(w, http.StatusOK, v)
}

// AccountUpdate is PUT /account's body; a field left out (nil) keeps its
// value.
type AccountUpdate struct {
	// SpendingLimitUSD is the monthly limit in USD; 0 removes it (where the
	// operator allows).
	SpendingLimitUSD *float64 `json:"spending_limit_usd,omitempty"`
	// WebhookURL receives the threshold notifications; "" removes it.
	WebhookURL *string `json:"webhook_url,omitempty"`
	// WebhookSecret signs them; it is never shown back.
	WebhookSecret *string `json:"webhook_secret,omitempty"`
}

func (a *API) putAccount(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err != nil {
		httperr.Encode(w, http.StatusRequestEntityTooLarge, "body_too_large", "", "request body over 64 KiB")
		return
	}
	var up AccountUpdate
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&up); err != nil {
		httperr.Encode(w, http.StatusBadRequest, "invalid_json", "",
			"want a JSON object with spending_limit_usd (USD a month, 0: none), webhook_url and webhook_secret: "+httperr.Clip(err.Error()))
		return
	}
	owner := auth.User(r.Context())
	acct, err := a.cfg.Ledger.Account(r.Context(), owner)
	if err != nil {
		ledgerFailed(w, a.cfg.Logger, err)
		return
	}
	if up.SpendingLimitUSD != nil {
		if err := a.cfg.Policy.Check(owner, *up.SpendingLimitUSD); err != nil {
			httperr.Encode(w, http.StatusUnprocessableEntity, "invalid_value", "spending_limit_usd", err.Error())
			return
		}
		acct.SpendingLimitUSD = *up.SpendingLimitUSD
	}
	if up.WebhookURL != nil {
		if err := checkWebhookURL(*up.WebhookURL); err != nil {
			httperr.Encode(w, http.StatusUnprocessableEntity, "invalid_value", "webhook_url", err.Error())
			return
		}
		acct.WebhookURL = *up.WebhookURL
	}
	if up.WebhookSecret != nil {
		acct.WebhookSecret = *up.WebhookSecret
	}
	if err := a.cfg.Ledger.PutAccount(r.Context(), acct); err != nil {
		ledgerFailed(w, a.cfg.Logger, err)
		return
	}
	a.cfg.Logger.Info("account updated", "owner", owner, "spending_limit_usd", acct.SpendingLimitUSD, "webhook", acct.WebhookURL != "")
	a.write(w, r.Context(), acct)
}

// checkWebhookURL accepts "" (none) or an absolute http(s) URL.
func checkWebhookURL(s string) error {
	if s == "" {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("webhook_url %q: want an absolute http or https URL, or \"\" for none", httperr.Clip(s))
	}
	return nil
}
