package xds

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/thawhq/thaw/internal/envoytest"

	bootstrap "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	httpopts "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
)

// adsCluster is what an operator checks of the bootstrap's ADS cluster.
type adsCluster struct {
	Type      string
	Hosts     []string
	Connect   time.Duration
	PingEvery time.Duration
	PingWait  time.Duration
	SAN, SNI  string
}

// bootstrapADS parses Bootstrap(c) and returns its ADS cluster, validating
// a cleartext bootstrap with Envoy when bin/envoy is installed (Envoy
// refuses a bootstrap whose TLS files are missing; cmd/thaw's TLS test
// validates one with real files).
func bootstrapADS(t *testing.T, c BootstrapConfig) (adsCluster, error) {
	t.Helper()
	js, err := Bootstrap(c)
	if err != nil {
		return adsCluster{}, err
	}
	var b bootstrap.Bootstrap
	if err := protojson.Unmarshal(js, &b); err != nil {
		t.Fatal(err)
	}
	cl := b.GetStaticResources().GetClusters()[0]
	got := adsCluster{Type: cl.GetType().String(), Connect: cl.GetConnectTimeout().AsDuration()}
	for _, l := range cl.GetLoadAssignment().GetEndpoints() {
		for _, h := range l.GetLbEndpoints() {
			sa := h.GetEndpoint().GetAddress().GetSocketAddress()
			got.Hosts = append(got.Hosts, fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue()))
		}
	}
	var opts httpopts.HttpProtocolOptions
	if err := cl.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].UnmarshalTo(&opts); err != nil {
		t.Fatal(err)
	}
	ka := opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions().GetConnectionKeepalive()
	got.PingEvery, got.PingWait = ka.GetInterval().AsDuration(), ka.GetTimeout().AsDuration()
	if c.TLS.CAFile != "" {
		v, err := bootstrapTLS(t, c)
		if err != nil {
			t.Fatal(err)
		}
		got.SAN, got.SNI = v.SAN, v.SNI
	}
	if c.TLS.CAFile == "" {
		envoytest.Validate(t, js)
	}
	return got, nil
}

// TestBootstrapReplicas: every xDS server replica in XDSAddr is a host of
// the ADS cluster, which Envoy dials promptly and pings so that a dead
// replica's stream is given up and another replica is dialed.
func TestBootstrapReplicas(t *testing.T) {
	ping := func(a adsCluster) adsCluster {
		a.Connect, a.PingEvery, a.PingWait = time.Second, 20*time.Second, 5*time.Second
		return a
	}
	ca := BootstrapTLS{CAFile: "/ca.crt"}
	tests := []struct {
		name string
		addr string
		tls  BootstrapTLS
		want adsCluster
	}{
		{"one", "127.0.0.1:18000", BootstrapTLS{}, ping(adsCluster{Type: "STATIC", Hosts: []string{"127.0.0.1:18000"}})},
		{"two IPs", "127.0.0.1:18000,127.0.0.1:18001", BootstrapTLS{},
			ping(adsCluster{Type: "STATIC", Hosts: []string{"127.0.0.1:18000", "127.0.0.1:18001"}})},
		{"names and spaces", "thaw-1.internal:18000, thaw-2.internal:18000 ,10.0.0.3:18000", BootstrapTLS{},
			ping(adsCluster{Type: "STRICT_DNS", Hosts: []string{"thaw-1.internal:18000", "thaw-2.internal:18000", "10.0.0.3:18000"}})},
		{"TLS, one host, two ports", "127.0.0.1:18000,127.0.0.1:18001", ca,
			ping(adsCluster{Type: "STATIC", Hosts: []string{"127.0.0.1:18000", "127.0.0.1:18001"}, SAN: "IP_ADDRESS 127.0.0.1"})},
		{"TLS, two hosts, server name given", "10.0.0.1:18000,10.0.0.2:18000", BootstrapTLS{CAFile: "/ca.crt", ServerName: "xds.thaw.internal"},
			ping(adsCluster{Type: "STATIC", Hosts: []string{"10.0.0.1:18000", "10.0.0.2:18000"}, SAN: "DNS xds.thaw.internal", SNI: "xds.thaw.internal"})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := bootstrapADS(t, BootstrapConfig{XDSAddr: tc.addr, TLS: tc.tls})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ADS cluster (-want +got):\n%s", diff)
			}
		})
	}
}

// TestBootstrapReplicasRefused: a list Envoy could not use, or TLS that
// would check one replica's certificate against another's host name, is
// refused with the reason.
func TestBootstrapReplicasRefused(t *testing.T) {
	for name, c := range map[string]BootstrapConfig{
		"empty entry":                      {XDSAddr: "127.0.0.1:18000,,127.0.0.1:18001"},
		"trailing comma":                   {XDSAddr: "127.0.0.1:18000,"},
		"no port":                          {XDSAddr: "127.0.0.1:18000,127.0.0.1"},
		"twice":                            {XDSAddr: "127.0.0.1:18000, 127.0.0.1:18000"},
		"TLS, hosts differ, no servername": {XDSAddr: "10.0.0.1:18000,10.0.0.2:18000", TLS: BootstrapTLS{CAFile: "/ca.crt"}},
	} {
		if _, err := Bootstrap(c); !errors.Is(err, ErrInvalidState) {
			t.Errorf("%s: Bootstrap(%q) = %v, want ErrInvalidState", name, c.XDSAddr, err)
		}
	}
}
