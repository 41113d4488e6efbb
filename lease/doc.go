// Package lease elects one leader among thaw replicas through a Redis key,
// so that only one autoscaler acts at a time. The holder renews the key well
// before it expires; another replica takes over within TTL of the holder's
// death. Redis holds nothing durable here: losing the key only means a new
// election.
package lease
