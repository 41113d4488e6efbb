// Package live shares the leader's view of the deployments' instances with
// the other thaw server replicas, through Redis.
//
// Only the leader runs the fleet (cmd/thaw: one term of leadership), but
// every replica serves the deploy API, which shows each deployment's status
// and instances. The leader's Publisher writes the fleet's view of every
// deployment to one Redis hash each Interval (and at once when asked); the
// followers' Readers read it back each Interval. A follower's answer is thus
// at most two intervals (plus a Redis round trip) behind the leader's.
//
// The hash expires when no leader has written it for Expiry: a follower then
// answers as the fleet does for a deployment it has not reconciled yet
// (initializing), rather than show instances nobody watches.
package live
