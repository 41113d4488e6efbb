// Package xds is thaw's Envoy control plane: a pure builder that turns the
// edge's state (listener, thaw's API, the activator replicas, each
// deployment's ready instances) into one validated, consistent xDS snapshot,
// and a Server that serves it to any number of Envoys over ADS (state of the
// world and delta) and pushes a new snapshot whenever the fleet's endpoints
// change.
//
// Routing. The paths and header names below are package routing's, which
// thaw's /authz (package proxy) shares; contract.go puts them in Envoy's
// terms. Every inference request first matches the "activator" route,
// whose ext_authz filter asks thaw (HTTP service at /authz<path>, with the
// first 64 KiB of the body). thaw authenticates the token, finds the model
// (body "model", either "<owner>/<name>" or "deploy_id:<id>", or the native
// /v1/inference/<owner>/<name> path) among the caller's deployments, and
// answers either with thaw's OpenAI-shaped 401/404/400, which Envoy returns
// to the client, or 200 with two headers that Envoy copies onto the request:
//
//	x-thaw-deploy-id: <id>
//	x-thaw-route:     direct | activator
//
// ext_authz's clear_route_cache then re-selects the route: "direct" requests
// on the OpenAI paths match their deployment's route (cluster deploy-<id>,
// /v1/openai/... rewritten to /v1/...); everything else (the deploy_id:
// form, the native path, whose body only thaw can translate, a deployment
// Envoy does not know yet) stays on the activator route. A request without a
// valid token for the deployment's owner is answered by ext_authz and never
// reaches a model server; a client cannot pick a route by sending the
// headers itself, because ext_authz runs on every inference route and
// overwrites both on success. This was chosen over json_to_metadata body
// routing because one answer covers all three ways of naming a model and
// the ownership check, and thaw, not Envoy, is the source of truth for names.
// Everything that is not an inference path (deploy API, /v1/models,
// /healthz, unknown paths) goes to thaw's API cluster with ext_authz off, so
// thaw answers, 404s included.
//
// Clusters. deploy-<id> is an EDS cluster whose priority 0 holds the ready
// instances (DRAINING ones marked so, out of load balancing) and priority 1
// the activator replicas: with no ready instance Envoy fails over to the
// activator, which holds the request, signals demand and forwards it once an
// instance is ready. thaw-activator (EDS) serves the activator route;
// thaw-api is static and holds every thaw server replica (State.APIs): the
// catch-all and /authz load-balance over them, eject a replica whose
// connections fail, and retry on another replica a request that could not
// connect, and also a check or a read (GET, HEAD: the thaw-api-read route)
// whose replica died under it, so one replica's death costs the edge no
// request but a write it was answering (retrying that could apply it
// twice).
//
// Replicas. Every thaw server replica serves xDS and builds its snapshot
// from the same state: Build sorts and dedups addresses, deployments and
// instances and versions each type by a hash of its resources, so an Envoy
// that moves from one replica to another is re-sent exactly what it has.
//
// Timeouts are sized for LLMs: route timeouts are off (a stream is never cut
// at 15 s), stream idle timeouts are the hold timeout plus a margin (a held
// request is silent until an instance is ready), and retries happen only
// before a model server received the request (connect-failure,
// refused-stream, reset-before-request), on another host, then on the next
// priority.
//
// TLS. Config.TLS serves ADS over TLS, mutual when it requires client
// certificates; BootstrapTLS gives Envoy the matching transport socket (the
// CA to trust, the server name its certificate must hold, Envoy's own
// certificate). State.ListenTLS puts the operator's certificate on the
// public listener (HTTP/2 and HTTP/1.1 by ALPN). Both name PEM files on
// Envoy's host, so snapshots stay a pure function of the state and hold no
// key material.
package xds
