package xds

import (
	"context"
	"crypto/tls"
	"errors"
	"testing"
	"time"

	bootstrap "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/thawhq/thaw/internal/certtest"
	"github.com/thawhq/thaw/internal/xdstest"
)

// tlsView is what a TLS transport socket tells Envoy, flattened.
type tlsView struct {
	Socket    string
	Cert, Key string
	CA        string
	SAN       string // "<type> <name>"
	SNI       string
	ALPN      []string
}

func viewCommon(name string, c *tlsv3.CommonTlsContext) tlsView {
	v := tlsView{Socket: name, ALPN: c.GetAlpnProtocols()}
	if certs := c.GetTlsCertificates(); len(certs) > 0 {
		v.Cert, v.Key = certs[0].GetCertificateChain().GetFilename(), certs[0].GetPrivateKey().GetFilename()
	}
	vc := c.GetValidationContext()
	v.CA = vc.GetTrustedCa().GetFilename()
	for _, m := range vc.GetMatchTypedSubjectAltNames() {
		v.SAN = m.GetSanType().String() + " " + m.GetMatcher().GetExact()
	}
	return v
}

// listenerTLS is the edge listener's TLS settings; zero without TLS.
func listenerTLS(t *testing.T, st State) tlsView {
	t.Helper()
	lis := resources(t, st)[resource.ListenerType][0].(*listener.Listener)
	ts := lis.GetFilterChains()[0].GetTransportSocket()
	if ts == nil {
		return tlsView{}
	}
	var ctx tlsv3.DownstreamTlsContext
	if err := ts.GetTypedConfig().UnmarshalTo(&ctx); err != nil {
		t.Fatal(err)
	}
	if ctx.GetRequireClientCertificate().GetValue() {
		t.Error("the public listener asks clients for a certificate")
	}
	return viewCommon(ts.GetName(), ctx.GetCommonTlsContext())
}

func TestBuildListenerTLS(t *testing.T) {
	if got := listenerTLS(t, testState()); !cmp.Equal(tlsView{}, got) {
		t.Errorf("no ListenTLS: listener has TLS %+v", got)
	}
	st := testState()
	st.ListenTLS = ListenerTLS{CertFile: "/etc/thaw/edge.crt", KeyFile: "/etc/thaw/edge.key"}
	want := tlsView{Socket: "envoy.transport_sockets.tls", Cert: "/etc/thaw/edge.crt", Key: "/etc/thaw/edge.key", ALPN: []string{"h2", "http/1.1"}}
	if diff := cmp.Diff(want, listenerTLS(t, st)); diff != "" {
		t.Errorf("listener TLS (-want +got):\n%s", diff)
	}

	// The same certificate, the same versions; TLS on changes the listener
	// only (routes, clusters and endpoints are not re-sent).
	plain, err := Build(testState())
	if err != nil {
		t.Fatal(err)
	}
	a, err := Build(st)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Build(st)
	if err != nil {
		t.Fatal(err)
	}
	changed := map[string]bool{}
	for _, typ := range []string{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType} {
		if a.GetVersion(typ) != b.GetVersion(typ) {
			t.Errorf("%s: same state, versions %q and %q", typ, a.GetVersion(typ), b.GetVersion(typ))
		}
		changed[typ] = a.GetVersion(typ) != plain.GetVersion(typ)
	}
	wantChanged := map[string]bool{resource.ListenerType: true, resource.RouteType: false, resource.ClusterType: false, resource.EndpointType: false}
	if diff := cmp.Diff(wantChanged, changed); diff != "" {
		t.Errorf("types whose version TLS changed (-want +got):\n%s", diff)
	}

	for name, lt := range map[string]ListenerTLS{"no key": {CertFile: "c"}, "no cert": {KeyFile: "k"}} {
		st := testState()
		st.ListenTLS = lt
		if _, err := Build(st); !errors.Is(err, ErrInvalidState) {
			t.Errorf("%s: Build = %v, want ErrInvalidState", name, err)
		}
	}
}

// bootstrapTLS is the TLS settings of the bootstrap's ADS cluster.
func bootstrapTLS(t *testing.T, c BootstrapConfig) (tlsView, error) {
	t.Helper()
	js, err := Bootstrap(c)
	if err != nil {
		return tlsView{}, err
	}
	var b bootstrap.Bootstrap
	if err := protojson.Unmarshal(js, &b); err != nil {
		t.Fatal(err)
	}
	ts := b.GetStaticResources().GetClusters()[0].GetTransportSocket()
	if ts == nil {
		return tlsView{}, nil
	}
	var ctx tlsv3.UpstreamTlsContext
	if err := ts.GetTypedConfig().UnmarshalTo(&ctx); err != nil {
		t.Fatal(err)
	}
	v := viewCommon(ts.GetName(), ctx.GetCommonTlsContext())
	v.SNI = ctx.GetSni()
	return v, nil
}

func TestBootstrapTLS(t *testing.T) {
	const sock = "envoy.transport_sockets.tls"
	h2 := []string{"h2"}
	tests := []struct {
		name string
		addr string
		tls  BootstrapTLS
		want tlsView
	}{
		{"cleartext", "127.0.0.1:18000", BootstrapTLS{}, tlsView{}},
		{"server TLS, IP", "127.0.0.1:18000", BootstrapTLS{CAFile: "/ca.crt"},
			tlsView{Socket: sock, CA: "/ca.crt", SAN: "IP_ADDRESS 127.0.0.1", ALPN: h2}},
		{"mutual TLS, DNS name", "thaw.internal:18000", BootstrapTLS{CAFile: "/ca.crt", CertFile: "/envoy.crt", KeyFile: "/envoy.key"},
			tlsView{Socket: sock, CA: "/ca.crt", Cert: "/envoy.crt", Key: "/envoy.key", SAN: "DNS thaw.internal", SNI: "thaw.internal", ALPN: h2}},
		{"server name given", "10.0.0.5:18000", BootstrapTLS{CAFile: "/ca.crt", ServerName: "xds.thaw.internal"},
			tlsView{Socket: sock, CA: "/ca.crt", SAN: "DNS xds.thaw.internal", SNI: "xds.thaw.internal", ALPN: h2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := bootstrapTLS(t, BootstrapConfig{XDSAddr: tc.addr, TLS: tc.tls})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ADS cluster TLS (-want +got):\n%s", diff)
			}
		})
	}
	for name, bt := range map[string]BootstrapTLS{
		"client cert without CA": {CertFile: "/envoy.crt", KeyFile: "/envoy.key"},
		"server name without CA": {ServerName: "x"},
		"cert without key":       {CAFile: "/ca.crt", CertFile: "/envoy.crt"},
		"key without cert":       {CAFile: "/ca.crt", KeyFile: "/envoy.key"},
	} {
		if _, err := bootstrapTLS(t, BootstrapConfig{XDSAddr: "127.0.0.1:18000", TLS: bt}); !errors.Is(err, ErrInvalidState) {
			t.Errorf("%s: Bootstrap = %v, want ErrInvalidState", name, err)
		}
	}
}

// startTLSServer runs a Server serving ADS over mutual TLS: its
// certificate for 127.0.0.1 and clients' certificates both from ca.
func startTLSServer(t *testing.T, ca *certtest.CA) string {
	t.Helper()
	_, addr := runServer(t, Config{TLS: &tls.Config{
		Certificates: []tls.Certificate{ca.IssueT(t, "xds", "127.0.0.1").TLS},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.Pool(),
		MinVersion:   tls.VersionTLS12,
	}})
	return addr
}

// fetchListeners asks the ADS server at addr for the listeners with creds
// and returns the error of the exchange; a served response must hold the
// one listener.
func fetchListeners(t *testing.T, addr string, creds credentials.TransportCredentials) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	listeners, err := xdstest.FetchListeners(ctx, addr, creds, "edge")
	if err == nil && len(listeners) != 1 {
		t.Errorf("got %d listeners, want 1", len(listeners))
	}
	return err
}

// TestServerMutualTLS: over mutual TLS, an Envoy with a certificate the CA
// signed gets its configuration; one without a certificate, with another
// CA's, or in cleartext is refused.
func TestServerMutualTLS(t *testing.T) {
	ca := certtest.NewCAT(t, "thaw test CA")
	addr := startTLSServer(t, ca)
	other := certtest.NewCAT(t, "other CA")
	tlsCreds := func(certs ...tls.Certificate) credentials.TransportCredentials {
		return credentials.NewTLS(&tls.Config{RootCAs: ca.Pool(), Certificates: certs})
	}
	tests := []struct {
		name  string
		creds credentials.TransportCredentials
		ok    bool
	}{
		{"client certificate from the CA", tlsCreds(ca.IssueT(t, "envoy").TLS), true},
		{"no client certificate", tlsCreds(), false},
		{"client certificate from another CA", tlsCreds(other.IssueT(t, "envoy").TLS), false},
		{"cleartext", insecure.NewCredentials(), false},
		{"server not trusted", credentials.NewTLS(&tls.Config{RootCAs: other.Pool(), Certificates: []tls.Certificate{ca.IssueT(t, "envoy").TLS}}), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := fetchListeners(t, addr, tc.creds)
			if tc.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tc.ok && err == nil {
				t.Fatal("served its configuration, want refused")
			}
		})
	}
}
