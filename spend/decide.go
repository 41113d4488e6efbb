package spend

import (
	"fmt"
	"time"
)

// Thresholds are the percentages of the monthly limit at which a user is
// told, ascending. The last one blocks.
var Thresholds = []int{50, 80, 100}

// State is what Decide needs about one user this month.
type State struct {
	// SpentUSD is the month's cost so far, running instances included.
	SpentUSD float64
	// LimitUSD is the monthly limit; 0 means none.
	LimitUSD float64
	// Notified is the highest threshold already announced this month (0:
	// none).
	Notified int
}

// Decision is what to do about one user.
type Decision struct {
	// Notify lists the thresholds newly crossed, ascending; announce each
	// once.
	Notify []int
	// Blocked: the user has reached the limit.
	Blocked bool
}

// Decide applies the limit to the month's spend. A threshold is crossed
// when spend reaches that share of the limit; one crossed before (Notified)
// is not announced again, and several crossed at once are all announced.
func Decide(s State) Decision {
	if s.LimitUSD <= 0 {
		return Decision{}
	}
	var d Decision
	for _, t := range Thresholds {
		if s.SpentUSD*100 >= s.LimitUSD*float64(t) && t > s.Notified {
			d.Notify = append(d.Notify, t)
		}
	}
	d.Blocked = s.SpentUSD >= s.LimitUSD
	return d
}

// MonthStart is the first instant of t's calendar month, UTC: limits are
// monthly, statements weekly.
func MonthStart(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
}

// Forecast is when spend reaches limit at burn USD per hour, from now: the
// zero time when there is no limit or nothing burns, now when it is
// already reached.
func Forecast(spent, limit, burnPerHour float64, now time.Time) time.Time {
	switch {
	case limit <= 0:
		return time.Time{}
	case spent >= limit:
		return now
	case burnPerHour <= 0:
		return time.Time{}
	}
	hours := (limit - spent) / burnPerHour
	return now.Add(time.Duration(hours * float64(time.Hour))).Truncate(time.Second)
}

// BlockedMessage is what a blocked user is told, in errors and events.
func BlockedMessage(spent, limit float64) string {
	return fmt.Sprintf("monthly spending limit reached: %.2f USD spent of %.2f USD; deployments are scaled to zero until the limit is raised (PUT /account) or the month turns", spent, limit)
}
