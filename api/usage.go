package api

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/thawhq/thaw/auth"
	"github.com/thawhq/thaw/httperr"
	"github.com/thawhq/thaw/meter"
	"github.com/thawhq/thaw/spend"
)

func (a *API) usage(w http.ResponseWriter, r *http.Request) {
	a.report(w, r, "")
}

// deployUsage is GET /usage for one deployment of the caller's, deleted
// ones included: the ledger keeps them after the store forgets them.
func (a *API) deployUsage(w http.ResponseWriter, r *http.Request) {
	id, owner := r.PathValue("id"), auth.User(r.Context())
	d, err := a.cfg.Store.Fetch(id)
	mine := err == nil && d.Owner == owner
	if err != nil {
		ivs, ok := a.readIntervals(w, r.Context(), owner, time.Unix(0, 0), a.cfg.Now().UTC())
		if !ok {
			return
		}
		mine = len(onlyDeployment(ivs, nil, id).ivs) > 0
	}
	if !mine {
		notFound(w, id)
		return
	}
	a.report(w, r, id)
}

func (a *API) report(w http.ResponseWriter, r *http.Request, deployID string) {
	now := a.cfg.Now().UTC()
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
			fmt.Sprintf("unknown group_by %q, want one of deployment, gpu, day, week", httperr.Clip(string(by))))
		return
	}
	owner := auth.User(r.Context())
	ivs, toks, ok := a.read(w, r.Context(), owner, from, to)
	if !ok {
		return
	}
	if deployID != "" {
		only := onlyDeployment(ivs, toks, deployID)
		ivs, toks = only.ivs, only.toks
	}
	rep, err := meter.Summarize(ivs, toks, from, to, now, by, a.cfg.Prices)
	if err != nil {
		unpriced(w, a.cfg.Logger, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

// invoices is GET /usage/invoices: weekly statements, Monday to Monday
// UTC, as JSON or (Accept: text/csv) CSV. The default window is the last
// four weeks and this one.
func (a *API) invoices(w http.ResponseWriter, r *http.Request) {
	now := a.cfg.Now().UTC()
	from, to, ok := window(w, r, now, meter.WeekStart(now).AddDate(0, 0, -28))
	if !ok {
		return
	}
	from = meter.WeekStart(from)
	ivs, _, ok := a.read(w, r.Context(), auth.User(r.Context()), from, to)
	if !ok {
		return
	}
	sts, err := meter.Statements(ivs, from, to, now, a.cfg.Prices)
	if err != nil {
		unpriced(w, a.cfg.Logger, err)
		return
	}
	if strings.Contains(r.Header.Get("Accept"), "text/csv") {
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		w.Header().Set("Content-Disposition", `attachment; filename="thaw-statements.csv"`)
		if err := meter.WriteCSV(w, sts); err != nil {
			a.cfg.Logger.Warn("write statements CSV", "err", err)
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
func (a *API) read(w http.ResponseWriter, ctx context.Context, owner string, from, to time.Time) ([]meter.Interval, []meter.Tokens, bool) {
	ivs, ok := a.readIntervals(w, ctx, owner, from, to)
	if !ok {
		return nil, nil, false
	}
	toks, err := a.cfg.Ledger.Tokens(ctx, owner, from, to)
	if err != nil {
		ledgerFailed(w, a.cfg.Logger, err)
		return nil, nil, false
	}
	return ivs, toks, true
}

func (a *API) readIntervals(w http.ResponseWriter, ctx context.Context, owner string, from, to time.Time) ([]meter.Interval, bool) {
	ivs, err := a.cfg.Ledger.Intervals(ctx, owner, from, to)
	if err != nil {
		ledgerFailed(w, a.cfg.Logger, err)
		return nil, false
	}
	return ivs, true
}

// ledgerFailed answers a ledger that cannot be read or written: 503,
// details in the log only.
func ledgerFailed(w http.ResponseWriter, log *slog.Logger, err error) {
	log.Error("usage ledger failed", "err", err)
	unavailable(w, "ledger_unavailable", "usage ledger unavailable, retry later")
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

// timeParam reads the query parameter name, an RFC 3339 time, into *t (in
// UTC); *t stays as it is when the parameter is absent. A malformed one is
// answered 400 and reported false.
func timeParam(w http.ResponseWriter, r *http.Request, name string, t *time.Time) bool {
	v := r.URL.Query().Get(name)
	if v == "" {
		return true
	}
	p, err := time.Parse(time.RFC3339, v)
	if err != nil {
		httperr.Encode(w, http.StatusBadRequest, "invalid_time", name,
			fmt.Sprintf("%s=%q is not an RFC 3339 time, e.g. 2026-11-02T00:00:00Z", name, httperr.Clip(v)))
		return false
	}
	*t = p.UTC()
	return true
}

// window reads ?from= and ?to= (RFC 3339; to defaults to now, from to
// def), writing 400 for a malformed or empty window.
func window(w http.ResponseWriter, r *http.Request, now, def time.Time) (from, to time.Time, ok bool) {
	from, to = def, now
	if !timeParam(w, r, "from", &from) || !timeParam(w, r, "to", &to) {
		return from, to, false
	}
	if !from.Before(to) {
		httperr.Encode(w, http.StatusBadRequest, "invalid_window", "from", "from must be before to")
		return from, to, false
	}
	return from, to, true
}
