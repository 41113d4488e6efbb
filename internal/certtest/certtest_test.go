package certtest

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"strings"
	"testing"
)

// TestHandshake: a server with a leaf for 127.0.0.1 is trusted by a client
// given the CA and asks a client certificate the CA signed; a client
// trusting another CA refuses it, and a server name it does not cover is
// refused too.
func TestHandshake(t *testing.T) {
	ca := NewCAT(t, "test CA")
	server := ca.IssueT(t, "server", "127.0.0.1", "localhost")
	client := ca.IssueT(t, "client")
	other := NewCAT(t, "other CA")

	cases := []struct {
		name    string
		roots   *x509.CertPool
		sni     string
		wantErr string
	}{
		{"trusted", ca.Pool(), "127.0.0.1", ""},
		{"by DNS name", ca.Pool(), "localhost", ""},
		{"other CA", other.Pool(), "127.0.0.1", "unknown authority"},
		{"name not covered", ca.Pool(), "example.com", "not example.com"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := handshake(t, server, client, ca.Pool(), tc.roots, tc.sni)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("handshake: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("handshake error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

// handshake runs a TLS handshake over a pipe, the server requiring a
// client certificate signed by a CA of clientCAs, and returns the client's
// error.
func handshake(t *testing.T, server, client Leaf, clientCAs, roots *x509.CertPool, sni string) error {
	t.Helper()
	cc, sc := net.Pipe()
	defer cc.Close()
	defer sc.Close()
	srv := tls.Server(sc, &tls.Config{Certificates: []tls.Certificate{server.TLS}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clientCAs})
	done := make(chan error, 1)
	go func() {
		err := srv.Handshake()
		if err == nil {
			_, err = io.WriteString(srv, "ok")
		}
		sc.Close()
		done <- err
	}()
	cl := tls.Client(cc, &tls.Config{RootCAs: roots, ServerName: sni, Certificates: []tls.Certificate{client.TLS}})
	err := cl.Handshake()
	if err == nil {
		_, err = io.ReadAll(cl)
	}
	cc.Close()
	<-done
	return err
}

// TestWrite: the files hold the PEM the leaf and the CA were made of.
func TestWrite(t *testing.T) {
	ca := NewCAT(t, "ca")
	f := ca.WriteT(t, t.TempDir(), "edge", "127.0.0.1")
	pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "127.0.0.1"}); err != nil {
		t.Errorf("written leaf does not verify against the CA: %v", err)
	}
}
