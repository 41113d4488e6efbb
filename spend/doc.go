// Package spend keeps each user under their monthly spending limit.
//
// It owns two things, the way the autoscaler does:
//
//   - Decide, a pure function from what a user has spent this calendar
//     month (UTC), their limit and the thresholds already announced to a
//     Decision: which thresholds (50, 80, 100 percent) are newly crossed and
//     whether the user is over the limit.
//   - Enforcer, a loop that every Interval prices the month's GPU time from
//     the meter's ledger, applies Decide per user, records and announces
//     (webhook, signed) each threshold once a month, and keeps the set of
//     users over their limit. While a user is over it, the control plane
//     drains their deployments to zero (no stream is cut), refuses wakes
//     with OpenAI's 429 insufficient_quota, and refuses min_instances above
//     zero; all three ask Enforcer.Blocked, so the rule has one owner.
//
// A limit is lifted by raising it (PUT /account) or by the month turning:
// the next pass finds the user under it again.
package spend
