package xds

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"
)

// Resource names the builder uses; tests and operators find them in Envoy's
// stats (cluster.<name>.upstream_rq_total) and config dump.
const (
	// ListenerName is the edge listener.
	ListenerName = "thaw-edge"
	// RouteConfigName is the listener's route configuration (RDS).
	RouteConfigName = "thaw-routes"
	// APICluster is thaw's API (deploy API, /v1/models, /healthz, /authz).
	APICluster = "thaw-api"
	// APIReadRoute is the catch-all route of GET and HEAD requests to
	// APICluster; APIRoute the catch-all of the other methods.
	APIReadRoute = "thaw-api-read"
	// APIRoute is the catch-all route of the methods APIReadRoute does not
	// take.
	APIRoute = "thaw-api"
	// ActivatorCluster holds the activator replicas.
	ActivatorCluster = "thaw-activator"
	// DeployClusterPrefix + deploy ID names a deployment's cluster.
	DeployClusterPrefix = "deploy-"
)

// AuthzMaxBody is how much of a request body Envoy sends to /authz; a larger
// body is cut there (x-envoy-auth-partial-body: true), never rejected.
const AuthzMaxBody = 64 << 10

// DefaultHoldTimeout is State.HoldTimeout's default (thaw's own default).
const DefaultHoldTimeout = 10 * time.Minute

// HoldMargin is added to the hold timeout for Envoy's idle timeouts, so the
// activator's own 503 at the hold timeout reaches the client rather than
// Envoy's 408/504.
const HoldMargin = time.Minute

// State is everything the edge's configuration is built from.
type State struct {
	// Listen is the edge listener's address, "host:port" (host an IP).
	Listen string
	// ListenTLS is the listener's certificate; zero: cleartext HTTP.
	ListenTLS ListenerTLS
	// APIs are thaw's API addresses, "host:port" each, one per thaw server
	// replica: the deploy API, 404s, /healthz and the /authz service, which
	// Envoy load-balances over them (a dead replica is ejected and its
	// requests retried on another). At least one. Order and repeats do not
	// matter: Build sorts and dedups them, so replicas given the same list
	// build the same snapshot.
	APIs []string
	// Activators are the activator replicas, "host:port" each (IPs). Empty
	// means thaw's API replicas also hold requests (thaw dev, thaw server's
	// built-in activator). Sorted and deduped like APIs.
	Activators []string
	// HoldTimeout is how long the activator may hold a request; Envoy's
	// idle timeouts are this plus HoldMargin. Default DefaultHoldTimeout.
	HoldTimeout time.Duration
	// Deployments are the deployments with a route of their own.
	Deployments []Deployment
}

// Deployment is one deployment as the edge sees it.
type Deployment struct {
	ID string
	// Model is "<owner>/<model_name>", informational (route metadata); the
	// routing key is ID.
	Model string
	// Endpoints are the instances in load balancing (and draining ones).
	Endpoints []Endpoint
	// Capacity is max_batch_size: concurrent requests per instance.
	Capacity int
	// Failed routes every request to the activator, which fails it at once
	// with the deployment's reason.
	Failed bool
}

// Endpoint is one model-server instance.
type Endpoint struct {
	ID string
	// Addr is "host:port" (host an IP or a DNS name).
	Addr string
	// Draining instances are out of load balancing; their in-flight
	// requests finish.
	Draining bool
}

// ErrInvalidState is returned by Build for a State it cannot turn into a
// configuration.
var ErrInvalidState = errors.New("xds: invalid state")

// hostPort splits "host:port" for Envoy's SocketAddress.
func hostPort(addr string) (string, uint32, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%w: address %q: %v", ErrInvalidState, addr, err)
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil || port == 0 || host == "" {
		return "", 0, fmt.Errorf("%w: address %q: want host:port", ErrInvalidState, addr)
	}
	return host, uint32(port), nil
}
