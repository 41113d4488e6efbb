package xds

import (
	"fmt"
	"net"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
)

// tlsSocketName is Envoy's TLS transport socket.
const tlsSocketName = "envoy.transport_sockets.tls"

// ListenerTLS is the edge listener's certificate: PEM files on Envoy's
// host, which Envoy reads when it accepts the listener. The zero value
// serves cleartext HTTP.
type ListenerTLS struct {
	// CertFile is the certificate chain, leaf first.
	CertFile string
	// KeyFile is the certificate's private key.
	KeyFile string
}

// Enabled reports whether the listener serves TLS.
func (l ListenerTLS) Enabled() bool { return l.CertFile != "" || l.KeyFile != "" }

// downstreamTLS is the listener's TLS transport socket: the operator's
// certificate, HTTP/2 or HTTP/1.1 by ALPN (the connection manager's AUTO
// codec follows it). nil for cleartext.
func downstreamTLS(l ListenerTLS) (*core.TransportSocket, error) {
	if !l.Enabled() {
		return nil, nil
	}
	if l.CertFile == "" || l.KeyFile == "" {
		return nil, fmt.Errorf("%w: listener TLS needs both a certificate and a key file", ErrInvalidState)
	}
	ctx := &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificates: []*tlsv3.TlsCertificate{certificate(l.CertFile, l.KeyFile)},
		AlpnProtocols:   []string{"h2", "http/1.1"},
	}}
	if err := ctx.ValidateAll(); err != nil {
		return nil, fmt.Errorf("xds: listener TLS: %w", err)
	}
	return transportSocket(ctx), nil
}

// BootstrapTLS is how Envoy reaches the xDS server over TLS: PEM files on
// Envoy's host. The zero value connects in cleartext.
type BootstrapTLS struct {
	// CAFile holds the CA certificates the xDS server's certificate must
	// chain to. Setting it turns TLS on.
	CAFile string
	// CertFile and KeyFile are Envoy's client certificate and key, for an
	// xDS server that requires one (mutual TLS); both or neither.
	CertFile, KeyFile string
	// ServerName is the name the xDS server's certificate must hold as a
	// subject alternative name (an IP address SAN when it is an IP), also
	// sent as SNI when it is a DNS name. Default: XDSAddr's host.
	ServerName string
}

// upstreamTLS is the ADS cluster's TLS transport socket: the server's
// certificate must chain to CAFile and name serverName; ALPN h2, which
// gRPC servers require. nil for cleartext.
func upstreamTLS(b BootstrapTLS, serverName string) (*core.TransportSocket, error) {
	if b.CAFile == "" {
		if b.CertFile != "" || b.KeyFile != "" || b.ServerName != "" {
			return nil, fmt.Errorf("%w: xDS TLS: a client certificate or server name needs the CA file", ErrInvalidState)
		}
		return nil, nil
	}
	if (b.CertFile == "") != (b.KeyFile == "") {
		return nil, fmt.Errorf("%w: xDS TLS: the client certificate needs both its certificate and key file", ErrInvalidState)
	}
	if b.ServerName != "" {
		serverName = b.ServerName
	}
	san := &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_DNS, Matcher: exact(serverName)}
	sni := serverName
	if net.ParseIP(serverName) != nil {
		san.SanType, sni = tlsv3.SubjectAltNameMatcher_IP_ADDRESS, ""
	}
	common := &tlsv3.CommonTlsContext{
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa:                 file(b.CAFile),
			MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{san},
		}},
		AlpnProtocols: []string{"h2"},
	}
	if b.CertFile != "" {
		common.TlsCertificates = []*tlsv3.TlsCertificate{certificate(b.CertFile, b.KeyFile)}
	}
	ctx := &tlsv3.UpstreamTlsContext{CommonTlsContext: common, Sni: sni}
	if err := ctx.ValidateAll(); err != nil {
		return nil, fmt.Errorf("xds: xDS TLS: %w", err)
	}
	return transportSocket(ctx), nil
}

func certificate(cert, key string) *tlsv3.TlsCertificate {
	return &tlsv3.TlsCertificate{CertificateChain: file(cert), PrivateKey: file(key)}
}

func file(path string) *core.DataSource {
	return &core.DataSource{Specifier: &core.DataSource_Filename{Filename: path}}
}

func transportSocket(ctx proto.Message) *core.TransportSocket {
	return &core.TransportSocket{Name: tlsSocketName, ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)}}
}
