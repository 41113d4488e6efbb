// Package certtest makes throw-away certificates for tests: a certificate
// authority and leaf certificates it signs, for servers and clients on
// loopback, written as PEM files that thaw, Envoy and redis-server read.
// Keys are ECDSA P-256, which Go, BoringSSL (Envoy) and OpenSSL (Redis)
// all accept.
package certtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// validity is how long every certificate is valid, from an hour ago (so a
// clock a little behind does not reject it).
const validity = 24 * time.Hour

// CA is a certificate authority that exists for one test.
type CA struct {
	// Cert is the CA's self-signed certificate.
	Cert *x509.Certificate
	// PEM is Cert, PEM-encoded: what a client is told to trust.
	PEM []byte
	key *ecdsa.PrivateKey
}

// Leaf is a certificate the CA signed, valid for both server and client
// authentication.
type Leaf struct {
	// CertPEM and KeyPEM are the certificate and its PKCS #8 private key.
	CertPEM, KeyPEM []byte
	// TLS is the pair for a crypto/tls configuration.
	TLS tls.Certificate
}

// NewCA makes a CA named name.
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl, err := template(name)
	if err != nil {
		return nil, err
	}
	tmpl.IsCA = true
	tmpl.BasicConstraintsValid = true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("certtest: CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, PEM: pemBlock("CERTIFICATE", der), key: key}, nil
}

// NewCAT is NewCA for a test: an error ends the test.
func NewCAT(t testing.TB, name string) *CA {
	t.Helper()
	ca, err := NewCA(name)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// Pool is a certificate pool holding only the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Issue signs a leaf certificate with common name name for hosts, each an
// IP address ("127.0.0.1") or a DNS name ("localhost"); no host makes a
// client-only certificate.
func (ca *CA) Issue(name string, hosts ...string) (Leaf, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Leaf{}, err
	}
	tmpl, err := template(name)
	if err != nil {
		return Leaf{}, err
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return Leaf{}, fmt.Errorf("certtest: %s: %w", name, err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return Leaf{}, err
	}
	l := Leaf{CertPEM: pemBlock("CERTIFICATE", der), KeyPEM: pemBlock("PRIVATE KEY", pk)}
	if l.TLS, err = tls.X509KeyPair(l.CertPEM, l.KeyPEM); err != nil {
		return Leaf{}, err
	}
	return l, nil
}

// IssueT is Issue for a test: an error ends the test.
func (ca *CA) IssueT(t testing.TB, name string, hosts ...string) Leaf {
	t.Helper()
	l, err := ca.Issue(name, hosts...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// Files are the paths of a leaf's PEM files and of its CA's.
type Files struct {
	Cert, Key, CA string
}

// Write writes the leaf as <dir>/<name>.crt and <name>.key (mode 0600) and
// the CA as <dir>/ca.crt.
func (ca *CA) Write(dir, name string, l Leaf) (Files, error) {
	f := Files{
		Cert: filepath.Join(dir, name+".crt"),
		Key:  filepath.Join(dir, name+".key"),
		CA:   filepath.Join(dir, "ca.crt"),
	}
	for path, b := range map[string][]byte{f.Cert: l.CertPEM, f.Key: l.KeyPEM, f.CA: ca.PEM} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return Files{}, err
		}
	}
	return f, nil
}

// WriteT issues a leaf for hosts and writes it (Write) to dir; an error
// ends the test.
func (ca *CA) WriteT(t testing.TB, dir, name string, hosts ...string) Files {
	t.Helper()
	f, err := ca.Write(dir, name, ca.IssueT(t, name, hosts...))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func template(name string) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name, Organization: []string{"thaw tests"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validity),
	}, nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
