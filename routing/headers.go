package routing

// Headers of an allowed answer of thaw's /authz service. Envoy copies them
// onto the request (ext_authz allowed_upstream_headers) and re-selects the
// route on them; a client cannot choose its route by sending them, because
// ext_authz overwrites both on every inference request.
const (
	// DeployIDHeader carries the deployment the request resolved to, "-"
	// when /authz could not tell it (a body cut before "model").
	DeployIDHeader = "X-Thaw-Deploy-Id"
	// RouteHeader is Direct when the request may go straight to one of the
	// deployment's instances, Activator when it must pass through an
	// activator (a cold deployment, the deploy_id: form, the native path).
	RouteHeader = "X-Thaw-Route"
	// GrantHeader carries the edge's grant on a direct request (see
	// auth.Grants): the direct route removes the caller's token, and an
	// activator that route falls back to authenticates the request by it.
	GrantHeader = "X-Thaw-Grant"
)

// RouteHeader's values.
const (
	Direct    = "direct"
	Activator = "activator"
)

// PartialBodyHeader is set to "true" by Envoy on an authorization request
// when it sent only the start of a larger body (the edge allows partial
// bodies rather than rejecting large ones).
const PartialBodyHeader = "X-Envoy-Auth-Partial-Body"

// AuthzPrefix is where thaw serves the authorization service: Envoy checks
// a request for <path> as a request for AuthzPrefix+<path> to thaw's API,
// with the original method, headers and the start of the body.
const AuthzPrefix = "/authz"

// HoldTimeoutHeader is a request header that lowers how long that request
// may be held waiting for capacity: a Go duration ("30s", "300ms"). It
// never raises the hold past the server's limit; "0s" does not wait at all
// (the deployment is still woken). Only thaw reads it; a model server never
// receives it.
const HoldTimeoutHeader = "X-Thaw-Hold-Timeout"

// Response headers that tell a client how long its request waited.
const (
	// ColdStartHeader carries how long a request that arrived with no ready
	// instance was held until one started (e.g. "3.02s").
	ColdStartHeader = "X-Thaw-Cold-Start"
	// QueueTimeHeader carries how long a request to a deployment with a
	// ready instance waited for a free slot (all were busy).
	QueueTimeHeader = "X-Thaw-Queue-Time"
)

// WarmupHeader marks the fleet's warm-up request ("1"): the one-token
// completion a model server must answer before its instance is routable.
// Only thaw sends it, straight to the model server, so that whatever
// counts a model server's requests (the simulator's request log keeps
// their headers) can tell it from a client's.
const WarmupHeader = "X-Thaw-Warmup"
