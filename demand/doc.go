// Package demand shares per-deployment queue depth through Redis, so that
// every activator replica and the autoscaler see the same numbers, and
// carries the wake-up signal of a cold deployment.
//
// Layout (ephemeral, rebuildable state only):
//
//	thaw:demand:<replica>  hash  deploy_id -> "<held> <inflight>", expires
//	                             after TTL unless refreshed, so a dead
//	                             replica's demand disappears by itself
//	thaw:servers           hash  deploy_id -> "<running> <waiting>" scraped
//	                             from the model servers' vLLM metrics
//	thaw:wake              pub/sub channel of deploy_ids that need capacity
package demand
