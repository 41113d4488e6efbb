package meter

import (
	"cmp"
	"encoding/csv"
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"
)

// WeekStart is the start of t's billing week: the Monday 00:00 UTC at or
// before t.
func WeekStart(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	day := time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
	back := (int(day.Weekday()) + 6) % 7 // days since Monday
	return day.AddDate(0, 0, -back)
}

// Line is one line of a weekly statement: one deployment's GPU time on one
// GPU type.
type Line struct {
	DeployID string  `json:"deploy_id"`
	Model    string  `json:"model"`
	GPU      string  `json:"gpu"`
	GPUHours float64 `json:"gpu_hours"`
	RateUSD  float64 `json:"rate_usd"`
	// AmountUSD is GPUHours x RateUSD rounded to the cent: the only
	// rounding a statement does.
	AmountUSD float64 `json:"amount_usd"`
}

// Statement is one week's bill, Monday 00:00 UTC to the next Monday.
type Statement struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	Lines []Line    `json:"lines"`
	// TotalUSD is the sum of the lines' rounded amounts.
	TotalUSD float64 `json:"total_usd"`
	// Final says the week has ended: its amounts no longer change (unless
	// the end of an interval missed while thaw was down is recorded late).
	Final bool `json:"final"`
}

// Statements returns the weekly statements of the weeks that overlap
// [from, to), oldest first, leaving out weeks with no GPU time. Each covers
// its whole week (not clipped to from and to); an interval still open
// counts up to now, and the week holding now is not Final. A line is one
// deployment and GPU type; its amount is rounded to the cent, and the total
// is the sum of the rounded lines, so it differs from the ledger's exact
// cost by at most half a cent per line. It is pure.
func Statements(ivs []Interval, from, to, now time.Time, p Prices) ([]Statement, error) {
	from, to, now = from.UTC(), to.UTC(), now.UTC()
	if !to.After(from) {
		return nil, fmt.Errorf("meter: empty window: to %s is not after from %s", to.Format(time.RFC3339), from.Format(time.RFC3339))
	}
	var out []Statement
	for ws := WeekStart(from); ws.Before(to); ws = ws.AddDate(0, 0, 7) {
		we := ws.AddDate(0, 0, 7)
		type key struct{ deploy, gpu string }
		secs := map[key]float64{}
		lines := map[key]*Line{}
		for _, iv := range ivs {
			s := overlap(iv.Start, iv.end(now), ws, we) * float64(iv.NumGPUs)
			if s == 0 {
				continue
			}
			k := key{iv.DeployID, iv.GPU}
			if lines[k] == nil {
				rate, err := p.Rate(iv.GPU)
				if err != nil {
					return nil, fmt.Errorf("week of %s, deployment %s: %w", ws.Format(time.DateOnly), iv.DeployID, err)
				}
				lines[k] = &Line{DeployID: iv.DeployID, GPU: iv.GPU, RateUSD: rate}
			}
			lines[k].Model = iv.Model
			secs[k] += s
		}
		if len(lines) == 0 {
			continue
		}
		st := Statement{Start: ws, End: we, Final: !now.Before(we)}
		for k, l := range lines {
			l.GPUHours = secs[k] / 3600
			l.AmountUSD = roundTo(l.GPUHours*l.RateUSD, 100)
			st.Lines = append(st.Lines, *l)
		}
		slices.SortFunc(st.Lines, func(a, b Line) int {
			return cmp.Or(cmp.Compare(a.DeployID, b.DeployID), cmp.Compare(a.GPU, b.GPU))
		})
		for _, l := range st.Lines {
			st.TotalUSD += l.AmountUSD
		}
		// The lines are whole cents; this only removes float noise.
		st.TotalUSD = roundTo(st.TotalUSD, 100)
		out = append(out, st)
	}
	return out, nil
}

// csvHeader is the header row of WriteCSV.
var csvHeader = []string{"week_start", "week_end", "final", "deploy_id", "model", "gpu", "gpu_hours", "rate_usd", "amount_usd"}

// WriteCSV writes the statements' lines as CSV, one row per line after a
// header row (csvHeader): weeks as RFC 3339 dates, GPU-hours to six
// decimals, rates and amounts as given. A statement's total is the sum of
// its rows' amount_usd; it has no row of its own, so every row is a line.
func WriteCSV(w io.Writer, sts []Statement) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(csvHeader); err != nil {
		return err
	}
	for _, st := range sts {
		for _, l := range st.Lines {
			row := []string{
				st.Start.UTC().Format(time.DateOnly), st.End.UTC().Format(time.DateOnly),
				strconv.FormatBool(st.Final), l.DeployID, l.Model, l.GPU,
				strconv.FormatFloat(l.GPUHours, 'f', 6, 64),
				strconv.FormatFloat(l.RateUSD, 'f', -1, 64),
				strconv.FormatFloat(l.AmountUSD, 'f', 2, 64),
			}
			if err := cw.Write(row); err != nil {
				return err
			}
		}
	}
	cw.Flush()
	return cw.Error()
}
