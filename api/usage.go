package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/thawhq/thaw/auth"
	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/httperr"
	"github.com/thawhq/thaw/meter"
	"github.com/thawhq/thaw/spend"
)

// Ledger is what the usage endpoints read: the meter's store.
type Ledger interface {
	Intervals(ctx context.Context, owner string, from, to time.Time) ([]meter.Interval, error)
	Tokens(ctx context.Context, owner string, from, to time.Time) ([]meter.Tokens, error)
}

// UsageConfig configures the usage endpoints.
type UsageConfig struct {
	Ledger Ledger
	Prices meter.Prices
	// Store tells whose a deployment is, for GET /deploy/{id}/usage.
	Store *deploy.Store
	// Now defaults to time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Usage serves what a user's deployments have cost: GET /usage,
// GET /deploy/{id}/usage and GET /usage/invoices.
type Usage struct{ cfg UsageConfig }

// NewUsage returns the usage endpoints.
func NewUsage(cfg UsageConfig) (*Usage, error) {
	if cfg.Ledger == nil || cfg.Prices == nil || cfg.Store == nil {
		return nil, errors.New("api: Ledger, Prices and Store are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Usage{cfg: cfg}, nil
}

// Register adds the usage routes to mux, each wrapped by wrap (auth).
func (u *Usage) Register(mux *http.ServeMux, wrap func(http.Handler) http.Handler) {
	mux.Handle("GET /usage", wrap(http.HandlerFunc(u.usage)))
	mux.Handle("GET /deploy/{id}/usage", wrap(http.HandlerFunc(u.deployUsage)))
	mux.Handle("GET /usage/invoices", wrap(http.HandlerFunc(u.invoices)))
}

func (u *Usage) usage(w http.ResponseWriter, r *http.Request) {
	u.report(w, r, "")
}

// deployUsage is GET /usage for one deployment of the caller's, deleted
// ones included: the ledger keeps them after the store forgets them.
func (u *Usage) deployUsage(w http.ResponseWriter, r *http.Request) {
	id, owner := r.PathValue("id"), auth.User(r.Context())
	d, err := u.cfg.Store.Get(id)
	mine := err == nil && d.Owner == owner
	if err != nil {
		ivs, ok := u.readIntervals(w, r.Context(), owner, time.Unix(0, 0), u.cfg.Now().UTC())
		if !ok {
			return
		}
		mine = len(onlyDeployment(ivs, nil, id).ivs) > 0
	}
	if !mine {
		notFound(w, id)
		return
	}
	u.report(w, r, id)
}

func (u *Usage) report(w http.ResponseWriter, r *http.Request, deployID string) {
	now := u.cfg.Now().UTC()
	from, to, ok := window(w, r, now, spend.MonthStart(now))
	if !ok {
		return
	}
	by := meter.GroupBy(r.URL.Query().Get("group_by"))
	switch by {
	case "":
		by = meter.GroupDeployment
	case meter.GroupDeployment, meter.GroupGPU, meter.GroupDay, meter.GroupWeek:
	default:
		httperr.Encode(w, http.StatusBadRequest, "invalid_group_by", "group_by",
			fmt.Sprintf("unknown group_by %q, want one of deployment, gpu, day, week", clip(string(by))))
		return
	}
	owner := auth.User(r.Context())
	ivs, toks, ok := u.read(w, r.Context(), owner, from, to)
	if !ok {
		return
	}
	if deployID != "" {
		only := onlyDeployment(ivs, toks, deployID)
		ivs, toks = only.ivs, only.toks
	}
	rep, err := meter.Summarize(ivs, toks, from, to, now, by, u.cfg.Prices)
	if err != nil {
		unpriced(w, u.cfg.Logger, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

// invoices is GET /usage/invoices: weekly statements, Monday to Monday
// UTC, as JSON or (Accept: text/csv) CSV. The default window is the last
// four weeks and this one.
func (u *Usage) invoices(w http.ResponseWriter, r *http.Request) {
	now := u.cfg.Now().UTC()
	from, to, ok := window(w, r, now, meter.WeekStart(now).AddDate(0, 0, -28))
	if !ok {
		return
	}
	from = meter.WeekStart(from)
	ivs, _, ok := u.read(w, r.Context(), auth.User(r.Context()), from, to)
	if !ok {
		return
	}
	sts, err := meter.Statements(ivs, from, to, now, u.cfg.Prices)
	if err != nil {
		unpriced(w, u.cfg.Logger, err)
		return
	}
	if strings.Contains(r.Header.Get("Accept"), "text/csv") {
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		w.Header().Set("Content-Disposition", `attachment; filename="thaw-statements.csv"`)
		if err := meter.WriteCSV(w, sts); err != nil {
			u.cfg.Logger.Warn("write statements CSV", "err", err)
		}
		return
	}
	if sts == nil {
		sts = []meter.Statement{}
	}
	writeJSON(w, http.StatusOK, InvoicesView{From: from, To: to, Statements: sts})
}

// InvoicesView is GET /usage/invoices' JSON body: the weekly statements of
// the weeks overlapping [From, To), oldest first (From is moved back to its
// week's Monday).
type InvoicesView struct {
	From       time.Time         `json:"from"`
	To         time.Time         `json:"to"`
	Statements []meter.Statement `json:"statements"`
}

// read loads the owner's intervals and token counts over [from, to).
func (u *Usage) read(w http.ResponseWriter, ctx context.Context, owner string, from, to time.Time) ([]meter.Interval, []meter.Tokens, bool) {
	ivs, ok := u.readIntervals(w, ctx, owner, from, to)
	if !ok {
		return nil, nil, false
	}
	toks, err := u.cfg.Ledger.Tokens(ctx, owner, from, to)
	if err != nil {
		ledgerFailed(w, u.cfg.Logger, err)
		return nil, nil, false
	}
	return ivs, toks, true
}

func (u *Usage) readIntervals(w http.ResponseWriter, ctx context.Context, owner string, from, to time.Time) ([]meter.Interval, bool) {
	ivs, err := u.cfg.Ledger.Intervals(ctx, owner, from, to)
	if err != nil {
		ledgerFailed(w, u.cfg.Logger, err)
		return nil, false
	}
	return ivs, true
}

// ledgerFailed answers a ledger that cannot be read or written: 503,
// details in the log only.
func ledgerFailed(w http.ResponseWriter, log *slog.Logger, err error) {
	log.Error("usage ledger failed", "err", err)
	e := httperr.New(http.StatusServiceUnavailable, "ledger_unavailable", "", "usage ledger unavailable, retry later")
	e.RetryAfter = 5 * time.Second
	httperr.Write(w, e)
}

// unpriced answers a window the price table cannot price: an error, never a
// guess. It is the operator's to fix (a GPU type with no price).
func unpriced(w http.ResponseWriter, log *slog.Logger, err error) {
	log.Error("usage cannot be priced", "err", err)
	httperr.Encode(w, http.StatusServiceUnavailable, "unpriced_usage", "", "usage cannot be priced: "+err.Error()+" (the operator's price table lacks it)")
}

// usageOf is the part of a ledger read that is one deployment's.
type usageOf struct {
	ivs  []meter.Interval
	toks []meter.Tokens
}

func onlyDeployment(ivs []meter.Interval, toks []meter.Tokens, id string) usageOf {
	var out usageOf
	for _, iv := range ivs {
		if iv.DeployID == id {
			out.ivs = append(out.ivs, iv)
		}
	}
	for _, t := range toks {
		if t.DeployID == id {
			out.toks = append(out.toks, t)
		}
	}
	return out
}

// window reads ?from= and ?to= (RFC 3339; to defaults to now, from to
// def), writing 400 for a malformed or empty window.
func window(w http.ResponseWriter, r *http.Request, now, def time.Time) (from, to time.Time, ok bool) {
	from, to = def, now
	q := r.URL.Query()
	for _, p := range []struct {
		name string
		t    *time.Time
	}{{"from", &from}, {"to", &to}} {
		v := q.Get(p.name)
		if v == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			httperr.Encode(w, http.StatusBadRequest, "invalid_time", p.name,
				fmt.Sprintf("%s=%q is not an RFC 3339 time, e.g. 2026-11-02T00:00:00Z", p.name, clip(v)))
			return from, to, false
		}
		*p.t = t.UTC()
	}
	if !from.Before(to) {
		httperr.Encode(w, http.StatusBadRequest, "invalid_window", "from", "from must be before to")
		return from, to, false
	}
	return from, to, true
}
