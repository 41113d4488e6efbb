// Package stats samples every deployment's time series (GET
// /deploy/{id}/stats): every Interval (default 10s) one meter.Sample per
// deployment, written to the meter's database and kept for Retention
// (default 7 days; older samples are deleted once an hour).
//
// A sample has the deployment's instances by state (the fleet's counts),
// its held and in-flight requests (demand in Redis, summed over activator
// replicas) and what its model servers counted since the previous sample:
// finished requests, prompt and generated tokens, and the time to first
// token histogram. The counts come from the scraper's rounds (Observe,
// every second or so), turned into deltas per instance like the meter's
// TokenCounter does (a restarted server counts from zero again; an
// instance adopted from a previous thaw process starts as a baseline) and
// summed per deployment until the next sample.
//
// Folding samples into points per step is meter.Series, a pure function;
// cold starts come from the ledger's held and ready facts, not from here.
package stats
