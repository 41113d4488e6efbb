// Package proxy is thaw's request path (the activator): it identifies the
// model of each OpenAI-compatible or native inference request, holds the
// request while the deployment has no free capacity, and forwards it with
// httputil.ReverseProxy to an instance, at most max_batch_size in flight per
// instance. Held requests wait in FIFO order and are released the moment
// capacity appears (SetEndpoints), not on a poll. Demand (held + in flight)
// is reported to a DemandSink (Redis-backed, shared by every replica), which
// also carries the wake-up signal that scales a cold deployment at once.
package proxy
