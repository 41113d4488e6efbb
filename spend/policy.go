package spend

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/thawhq/thaw/meter"
)

// Policy is the operator's rule for limits: a cap per user. A capped user
// starts with the cap as their limit, may lower it but never raise it above
// the cap, and may not remove it. An uncapped user sets any limit, or 0 for
// none.
type Policy struct {
	// Caps maps a user to their cap in USD a month; "*" applies to every
	// user not named.
	Caps map[string]float64
}

// ParsePolicy reads "alice=100,*=500" (USD a month).
func ParsePolicy(s string) (Policy, error) {
	p := Policy{Caps: map[string]float64{}}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		user, v, ok := strings.Cut(part, "=")
		usd, err := strconv.ParseFloat(v, 64)
		if !ok || user == "" || err != nil || usd <= 0 {
			return Policy{}, fmt.Errorf("%q: want USER=USD (or *=USD) with USD > 0", part)
		}
		p.Caps[user] = usd
	}
	return p, nil
}

// Cap is owner's cap, if the operator set one.
func (p Policy) Cap(owner string) (float64, bool) {
	if c, ok := p.Caps[owner]; ok {
		return c, true
	}
	c, ok := p.Caps["*"]
	return c, ok
}

// Effective is the limit that applies to a: the user's own, bounded by the
// cap; the cap when the user set none.
func (p Policy) Effective(a meter.Account) float64 {
	limit := a.SpendingLimitUSD
	if c, ok := p.Cap(a.Owner); ok && (limit <= 0 || limit > c) {
		return c
	}
	return limit
}

// Check tells whether owner may set limit (USD a month; 0 removes it); the
// error is written for the user.
func (p Policy) Check(owner string, limit float64) error {
	if limit < 0 {
		return fmt.Errorf("spending_limit_usd must be 0 (no limit) or positive, got %v", limit)
	}
	c, ok := p.Cap(owner)
	switch {
	case !ok:
		return nil
	case limit == 0:
		return fmt.Errorf("the operator requires a spending limit for you: at most %.2f USD a month", c)
	case limit > c:
		return fmt.Errorf("spending_limit_usd %.2f is above the operator's cap for you, %.2f USD a month", limit, c)
	}
	return nil
}

func fmtThreshold(e Event) string {
	return fmt.Sprintf("%d%% of the monthly spending limit reached: %.2f USD spent of %.2f USD", e.Threshold, e.SpentUSD, e.LimitUSD)
}
