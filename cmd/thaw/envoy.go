package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/fleet"
	"github.com/thawhq/thaw/xds"
)

// runEnvoyBootstrap runs `thaw envoy-bootstrap`: it prints a minimal Envoy
// bootstrap (node, admin, the ADS cluster) to stdout; every listener, route,
// cluster and endpoint then comes from thaw's xDS server. Usage goes to
// stderr; -h prints it and returns nil.
func runEnvoyBootstrap(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("envoy-bootstrap", "Usage: thaw envoy-bootstrap [flags] > envoy.json\n\n"+
		"Prints a minimal Envoy bootstrap that takes its whole configuration from thaw's\n"+
		"xDS server (ADS). Run Envoy with it: envoy -c envoy.json\n\n"+
		"With --xds-ca Envoy reaches thaw's xDS server over TLS, checking that its\n"+
		"certificate names --xds-server-name; add --xds-client-cert and --xds-client-key\n"+
		"for a thaw that requires client certificates (--xds-client-ca). File paths are\n"+
		"read by Envoy, on its host.\n\nFlags:\n", stderr)
	var c xds.BootstrapConfig
	fs.StringVar(&c.XDSAddr, "xds-addr", "127.0.0.1:18000", "`host:port` of thaw's xDS (ADS) server; with several thaw server replicas, each one's, comma-separated: Envoy resumes from another when one dies")
	fs.StringVar(&c.NodeID, "node-id", "thaw-edge", "Envoy node `id`")
	fs.StringVar(&c.NodeCluster, "node-cluster", "thaw", "Envoy node `cluster`")
	fs.StringVar(&c.Admin, "admin", "127.0.0.1:9901", "`ip:port` of Envoy's admin interface")
	fs.BoolVar(&c.Delta, "delta", false, "use incremental xDS (DELTA_GRPC) instead of state of the world")
	fs.StringVar(&c.TLS.CAFile, "xds-ca", "", "PEM `file`, on Envoy's host, of the CAs the xDS server's certificate (thaw --xds-tls-cert) must chain to; set, Envoy connects over TLS")
	fs.StringVar(&c.TLS.CertFile, "xds-client-cert", "", "with --xds-ca: PEM `file`, on Envoy's host, of Envoy's client certificate, for a thaw with --xds-client-ca (mutual TLS)")
	fs.StringVar(&c.TLS.KeyFile, "xds-client-key", "", "with --xds-client-cert: PEM `file`, on Envoy's host, of its private key")
	fs.StringVar(&c.TLS.ServerName, "xds-server-name", "", "with --xds-ca: the `name` the xDS server's certificate must hold (a DNS or IP address SAN); default --xds-addr's host, required when the replicas in --xds-addr have different hosts")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("envoy-bootstrap: %w", err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("envoy-bootstrap: unexpected arguments %q", fs.Args())
	}
	b, err := xds.Bootstrap(c)
	if err != nil {
		return fmt.Errorf("envoy-bootstrap: %w", err)
	}
	_, err = fmt.Fprintf(stdout, "%s\n", b)
	return err
}

// edgeFlags are the flags of `thaw dev` and `thaw server` that put an Envoy
// edge in front of them: with --xds-addr set, thaw serves the edge's whole
// configuration over ADS.
type edgeFlags struct {
	xdsAddr    string
	listen     string
	replicas   string
	activators string
	envoyAdmin string
	// xdsTLS are the xDS server's certificate and, for mutual TLS, the
	// CA of Envoy's client certificate: files on this host.
	xdsTLS serverTLSFiles
	// listenTLS is the public listener's certificate: files on Envoy's
	// host.
	listenTLS xds.ListenerTLS
}

// register adds the edge flags to fs.
func (e *edgeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&e.xdsAddr, "xds-addr", "", "`host:port` to serve Envoy's configuration on (ADS, state of the world and delta); empty: no Envoy edge")
	fs.StringVar(&e.listen, "edge-addr", "127.0.0.1:10000", "with --xds-addr: `ip:port` Envoy's listener takes traffic on")
	fs.StringVar(&e.replicas, "replicas", "", "with --xds-addr: comma-separated `host:port` list of every thaw server replica's --addr as Envoy reaches it, the same list on each replica, this one's included; Envoy's catch-all route and /authz balance over them (default: this process's --addr)")
	fs.StringVar(&e.activators, "activators", "", "with --xds-addr: comma-separated `ip:port` list of the activator replicas Envoy falls back to while a model has no ready instance (default: --replicas, whose built-in activators hold requests)")
	fs.StringVar(&e.envoyAdmin, "envoy-admin", "", "with --xds-addr: comma-separated admin `URLs` of the Envoys (http://127.0.0.1:9901); scale-down then waits for Envoy's in-flight requests to an instance")
	fs.StringVar(&e.xdsTLS.Cert, "xds-tls-cert", "", "with --xds-addr: PEM `file` of the xDS server's certificate chain; with --xds-tls-key, ADS is served over TLS only (give Envoy the CA: thaw envoy-bootstrap --xds-ca); a rotated pair is used from the next connection on")
	fs.StringVar(&e.xdsTLS.Key, "xds-tls-key", "", "with --xds-tls-cert: PEM `file` of its private key")
	fs.StringVar(&e.xdsTLS.ClientCA, "xds-client-ca", "", "with --xds-tls-cert: PEM `file` of the CAs Envoy's client certificate must chain to: mutual TLS, an xDS client without such a certificate is refused (thaw envoy-bootstrap --xds-client-cert)")
	fs.StringVar(&e.listenTLS.CertFile, "edge-tls-cert", "", "with --xds-addr: PEM `file`, on Envoy's host, of the certificate chain Envoy's listener serves; with --edge-tls-key the listener takes HTTPS only (HTTP/2 and HTTP/1.1 by ALPN). Envoy reads it when the listener is pushed")
	fs.StringVar(&e.listenTLS.KeyFile, "edge-tls-key", "", "with --edge-tls-cert: PEM `file`, on Envoy's host, of its private key")
}

// newXDS returns the xDS server the flags describe, nil without --xds-addr.
// apiAddr is this process's --addr (thaw's API, /authz and, by default, the
// activator).
func (e *edgeFlags) newXDS(apiAddr string, holdTimeout time.Duration, log *slog.Logger) (*xds.Server, error) {
	if e.xdsAddr == "" {
		if e.xdsTLS != (serverTLSFiles{}) || e.listenTLS.Enabled() {
			return nil, errors.New("--xds-tls-*, --xds-client-ca and --edge-tls-* configure the Envoy edge: they need --xds-addr")
		}
		return nil, nil
	}
	if e.listenTLS.Enabled() && (e.listenTLS.CertFile == "" || e.listenTLS.KeyFile == "") {
		return nil, errors.New("--edge-tls-cert and --edge-tls-key go together")
	}
	edge, err := e.edgeState(apiAddr, holdTimeout)
	if err != nil {
		return nil, err
	}
	cfg := xds.Config{Addr: e.xdsAddr, Edge: edge, EnvoyAdmin: splitList(e.envoyAdmin), Logger: log}
	if cfg.TLS, err = e.xdsTLS.config(log); err != nil {
		return nil, fmt.Errorf("--xds-tls-cert, --xds-tls-key, --xds-client-ca: %w", err)
	}
	return xds.New(cfg)
}

// edgeState is the static part of the edge's state the flags describe,
// checked by building it (bad addresses fail now, not at the first push).
// Without --activators the API replicas hold requests (xds.Build's
// default): every replica runs the built-in activator.
func (e *edgeFlags) edgeState(apiAddr string, holdTimeout time.Duration) (xds.State, error) {
	apis, err := replicaAPIs(e.replicas, apiAddr)
	if err != nil {
		return xds.State{}, err
	}
	st := xds.State{Listen: e.listen, ListenTLS: e.listenTLS, APIs: apis, HoldTimeout: holdTimeout}
	for _, a := range splitList(e.activators) {
		if a, err = dialable(a); err != nil {
			return xds.State{}, fmt.Errorf("--activators: %w", err)
		}
		st.Activators = append(st.Activators, a)
	}
	if _, err := xds.Build(st); err != nil {
		return xds.State{}, err
	}
	return st, nil
}

// replicaAPIs is --replicas (list) in dialable form, or this process's
// --addr (addr) alone when it is empty. A list without this replica is
// refused: Envoy would send it nothing, and its /healthz and errors would
// not be what the edge answers.
func replicaAPIs(list, addr string) ([]string, error) {
	self, err := dialable(addr)
	if err != nil {
		return nil, fmt.Errorf("--addr: %w", err)
	}
	if list == "" {
		return []string{self}, nil
	}
	var apis []string
	found := false
	for _, r := range splitList(list) {
		d, err := dialable(r)
		if err != nil {
			return nil, fmt.Errorf("--replicas: %w", err)
		}
		apis = append(apis, d)
		found = found || isSelf(d, self, addr)
	}
	if len(apis) == 0 {
		return nil, errors.New("--replicas: no address")
	}
	if !found {
		return nil, fmt.Errorf("--replicas %q does not include this replica's --addr %s: give every replica the same list of all of them", list, self)
	}
	return apis, nil
}

// isSelf says whether replica, a dialable --replicas entry, is this
// process, whose --addr is addr (self in dialable form). A process listening
// on every interface (":8080", "0.0.0.0:8080") is any local address, or a
// name resolving to one, on its port.
func isSelf(replica, self, addr string) bool {
	if replica == self {
		return true
	}
	host, port, _ := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return false
	}
	rhost, rport, err := net.SplitHostPort(replica)
	if err != nil || rport != port {
		return false
	}
	ips := []net.IP{net.ParseIP(rhost)}
	if ips[0] == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		addrs, err := net.DefaultResolver.LookupIPAddr(ctx, rhost)
		if err != nil {
			return false
		}
		ips = ips[:0]
		for _, a := range addrs {
			ips = append(ips, a.IP)
		}
	}
	return slices.ContainsFunc(ips, isLocalIP)
}

// isLocalIP says whether ip is a loopback address or one of this host's
// interfaces'.
func isLocalIP(ip net.IP) bool {
	if ip.IsLoopback() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	return slices.ContainsFunc(addrs, func(a net.Addr) bool {
		n, ok := a.(*net.IPNet)
		return ok && n.IP.Equal(ip)
	})
}

// dialable turns a listen address (":8080", "0.0.0.0:8080") into one Envoy
// can connect to on this host.
func dialable(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// endpointsTee feeds the fleet's endpoint updates to every request path:
// the built-in activator, the Envoy edge (the xDS server) and
// activator replicas elsewhere (the Redis publisher). An instance is drained
// once all of them have nothing in flight to it.
type endpointsTee []fleet.Endpoints

func (t endpointsTee) SetEndpoints(deployID string, capacity int, addrs map[string]string) {
	for _, e := range t {
		e.SetEndpoints(deployID, capacity, addrs)
	}
}

func (t endpointsTee) Drained(deployID, instanceID string) <-chan struct{} {
	chs := make([]<-chan struct{}, len(t))
	for i, e := range t {
		chs[i] = e.Drained(deployID, instanceID)
	}
	done := make(chan struct{})
	go func() {
		for _, c := range chs {
			<-c
		}
		close(done)
	}()
	return done
}

func (t endpointsTee) Fail(deployID, reason string) {
	for _, e := range t {
		e.Fail(deployID, reason)
	}
}

func (t endpointsTee) Recover(deployID string) {
	for _, e := range t {
		e.Recover(deployID)
	}
}

func (t endpointsTee) Remove(deployID string) {
	for _, e := range t {
		e.Remove(deployID)
	}
}

// The xDS server takes the fleet's updates like the activator does.
var _ fleet.Endpoints = (*xds.Server)(nil)

// xdsEndpoints feeds the fleet's updates to the xDS server and names each
// deployment's route with its model (route metadata "model", shown in
// Envoy's config dump), which the fleet's updates do not carry. The fleet
// calls it from one goroutine, after the deployment is stored and before
// Remove, so a name is never set for a deployment already removed.
type xdsEndpoints struct {
	namedEndpoints
	lookup func(deployID string) (deploy.Deployment, error)
}

// namedEndpoints is the xDS server as xdsEndpoints uses it.
type namedEndpoints interface {
	fleet.Endpoints
	SetModel(deployID, model string)
}

func (x xdsEndpoints) SetEndpoints(deployID string, capacity int, addrs map[string]string) {
	x.setModel(deployID)
	x.namedEndpoints.SetEndpoints(deployID, capacity, addrs)
}

func (x xdsEndpoints) Fail(deployID, reason string) {
	x.setModel(deployID)
	x.namedEndpoints.Fail(deployID, reason)
}

func (x xdsEndpoints) Recover(deployID string) {
	x.setModel(deployID)
	x.namedEndpoints.Recover(deployID)
}

func (x xdsEndpoints) setModel(deployID string) {
	if d, err := x.lookup(deployID); err == nil {
		x.namedEndpoints.SetModel(deployID, d.FullName())
	}
}
