package spend

import (
	"fmt"
	"slices"
	"time"

	"github.com/thawhq/thaw/meter"
)

// Idle is a deployment whose instances have held GPUs with no request for
// a while: forgotten, most likely, and billed all along.
type Idle struct {
	DeployID, Model, Owner string
	// Since is when the idle stretch began: the last hour with a request,
	// or when the running instance started, whichever is later.
	Since time.Time
	// CostUSD is what the stretch has cost so far.
	CostUSD float64
}

// Message says it the way the user is told: "running idle for 61h: 244.00
// USD so far".
func (i Idle) Message(now time.Time) string {
	// Whole minutes, but whole seconds under a minute (a short
	// --idle-alert), never "0s".
	idle := now.Sub(i.Since).Truncate(time.Minute)
	if idle < time.Minute {
		idle = max(now.Sub(i.Since).Truncate(time.Second), time.Second)
	}
	return fmt.Sprintf("%s has been running idle for %s: %.2f USD so far (no request since %s); scale it to zero with min_instances 0 if it is not needed",
		i.Model, idle, Round2(i.CostUSD), i.Since.UTC().Format(time.RFC3339))
}

// FindIdle is pure: among the deployments with an instance running at now
// (an open interval in ivs), those with no request for at least after.
// toks are the token rows since the earliest such instance started; a row
// with requests counts as a request at the end of its hour (the counters
// are kept per hour), so an idle stretch is never overstated.
func FindIdle(ivs []meter.Interval, toks []meter.Tokens, now time.Time, after time.Duration, p meter.Prices) ([]Idle, error) {
	running := map[string]*Idle{}
	for _, iv := range ivs {
		if !iv.End.IsZero() || iv.Start.After(now) {
			continue
		}
		if d, ok := running[iv.DeployID]; ok {
			d.Since = minTime(d.Since, iv.Start)
			continue
		}
		running[iv.DeployID] = &Idle{DeployID: iv.DeployID, Model: iv.Model, Owner: iv.Owner, Since: iv.Start}
	}
	for _, t := range toks {
		d, ok := running[t.DeployID]
		if !ok || t.Requests == 0 {
			continue
		}
		if end := t.Hour.Add(time.Hour); end.After(d.Since) {
			d.Since = minTime(end, now)
		}
	}
	var out []Idle
	for id, d := range running {
		if now.Sub(d.Since) < after {
			continue
		}
		var mine []meter.Interval
		for _, iv := range ivs {
			if iv.DeployID == id {
				mine = append(mine, iv)
			}
		}
		rep, err := meter.Summarize(mine, nil, d.Since, now, now, meter.GroupDeployment, p)
		if err != nil {
			return nil, err
		}
		d.CostUSD = rep.Total.CostUSD
		out = append(out, *d)
	}
	slices.SortFunc(out, func(a, b Idle) int { return a.Since.Compare(b.Since) })
	return out, nil
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
