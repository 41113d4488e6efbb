package e2e

import (
	"crypto/tls"
	"fmt"
	"net/http"

	"github.com/thawhq/thaw/internal/certtest"
)

// NomadTLS is what an agent started with NomadConfig.TLS serves: TLS on its
// HTTP API and on RPC (mutual on both: verify_https_client), server names
// verified (verify_server_hostname), all certificates from one test CA.
type NomadTLS struct {
	// CA signed the agent's certificate; Client issues others with it.
	CA *certtest.CA
	// Agent are the agent's certificate, key and the CA file (ca.crt in
	// the directory NewNomadTLS wrote to). The certificate names
	// server.global.nomad and client.global.nomad, which
	// verify_server_hostname wants of the server and the client on RPC
	// (the -dev agent is both), and 127.0.0.1 and localhost for HTTPS. The
	// harness's own calls present it as their client certificate.
	Agent certtest.Files
	dir   string
	rt    http.RoundTripper
}

// NewNomadTLS makes a CA and the agent's certificate and writes them to
// dir.
func NewNomadTLS(dir string) (*NomadTLS, error) {
	ca, err := certtest.NewCA("thaw e2e nomad CA")
	if err != nil {
		return nil, err
	}
	leaf, err := ca.Issue("nomad agent", "server.global.nomad", "client.global.nomad", "localhost", "127.0.0.1")
	if err != nil {
		return nil, err
	}
	files, err := ca.Write(dir, "nomad-agent", leaf)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{leaf.TLS}, MinVersion: tls.VersionTLS12}
	return &NomadTLS{CA: ca, Agent: files, dir: dir, rt: tr}, nil
}

// Client issues a client certificate named name (no host) and writes it to
// the directory NewNomadTLS wrote to: what thaw server's NOMAD_CLIENT_CERT
// and NOMAD_CLIENT_KEY point at.
func (t *NomadTLS) Client(name string) (certtest.Files, error) {
	leaf, err := t.CA.Issue(name)
	if err != nil {
		return certtest.Files{}, err
	}
	return t.CA.Write(t.dir, name, leaf)
}

// Env is the Nomad environment (NOMAD_ADDR, NOMAD_CACERT and, with a
// client certificate, NOMAD_CLIENT_CERT and NOMAD_CLIENT_KEY) that points
// a Nomad API client at the agent whose HTTPS URL is url.
func (t *NomadTLS) Env(url string, client *certtest.Files) []string {
	env := []string{"NOMAD_ADDR=" + url, "NOMAD_CACERT=" + t.Agent.CA}
	if client != nil {
		env = append(env, "NOMAD_CLIENT_CERT="+client.Cert, "NOMAD_CLIENT_KEY="+client.Key)
	}
	return env
}

// agentBlock is the agent configuration's tls block; "" without TLS.
func (t *NomadTLS) agentBlock() string {
	if t == nil {
		return ""
	}
	return fmt.Sprintf(`tls {
  http                   = true
  rpc                    = true
  ca_file                = %q
  cert_file              = %q
  key_file               = %q
  verify_server_hostname = true
  verify_https_client    = true
}
`, t.Agent.CA, t.Agent.Cert, t.Agent.Key)
}

// scheme is the agent's HTTP API's URL scheme.
func (t *NomadTLS) scheme() string {
	if t == nil {
		return "http"
	}
	return "https"
}

// transport is what the harness's own calls to the agent go through: nil
// (http.DefaultTransport) without TLS, else one trusting the CA and
// presenting the agent's certificate.
func (t *NomadTLS) transport() http.RoundTripper {
	if t == nil {
		return nil
	}
	return t.rt
}
