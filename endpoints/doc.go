// Package endpoints shares each deployment's routable instances through
// Redis, so that activator replicas running as their own processes (`thaw
// activator`) hold and release requests exactly as the control plane's
// built-in activator does.
//
// Layout (ephemeral, rebuilt by the control plane at every start):
//
//	thaw:ep:<deploy_id>         string  JSON Record
//	thaw:ep                     pub/sub channel of changed deploy_ids
//	thaw:inflight:<replica>     hash    instance id -> requests in flight
//	                                    there, expires with the replica
//
// The control plane's Publisher writes records. In each activator replica a
// Subscriber applies them and answers model lookups, and an
// InflightReporter lets the Publisher tell when every replica has drained
// an instance.
package endpoints
