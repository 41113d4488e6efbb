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
//
// The Scraper also reads each ready instance's cumulative vLLM counters
// (finished requests, prompt and generated tokens) and hands every round to
// a TokenCounter (meter.TokenCounter), which adds what each instance
// counted since its previous read to the ledger's requests and tokens per
// deployment and hour: traffic sent straight to the instances by Envoy is
// counted too. Instances tells the scraper which instance ID serves at
// each ready address, so that those counts are kept per instance.
package demand
