// Package proxy is thaw's activator (the package keeps its older name;
// everything else calls it the activator). It identifies the model of each
// OpenAI-compatible or native inference request, holds the request while the
// deployment has no free capacity, and forwards it with
// httputil.ReverseProxy to an instance, at most max_batch_size in flight per
// instance. Held requests wait in FIFO order and are released the moment
// capacity appears (SetEndpoints), not on a poll; a request may lower its
// hold with routing.HoldTimeoutHeader. A slot is a lease released by a
// deferred call, so a client that goes away at any point (even mid-stream,
// when ReverseProxy panics with http.ErrAbortHandler) gives its slot back,
// and the model server sees its request cancelled. Demand (held + in flight)
// is reported to a DemandSink (Redis-backed, shared by every replica), which
// also carries the wake-up signal that scales a cold deployment at once.
//
// Every error a client sees is in OpenAI's shape (package httperr), the
// model server's own included, and never shows an address or an OS error.
// It also answers GET /v1/models and /v1/models/{owner}/{name} with the
// caller's models only.
package proxy
