package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// loadCAs reads a PEM file of CA certificates into a pool.
func loadCAs(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: no PEM certificate in it", path)
	}
	return pool, nil
}

// serverTLSFiles are a TLS server's PEM files, as flags name them.
type serverTLSFiles struct {
	// Cert and Key are the server's certificate chain and private key.
	Cert, Key string
	// ClientCA, when set, makes TLS mutual: a client must present a
	// certificate that chains to one of its CAs.
	ClientCA string
}

// config returns the server's TLS configuration (TLS 1.2 at least), nil
// when no file is set: cleartext.
func (f serverTLSFiles) config() (*tls.Config, error) {
	switch {
	case f == (serverTLSFiles{}):
		return nil, nil
	case f.Cert == "" && f.Key == "":
		return nil, errors.New("a client CA needs the server's certificate and key")
	case f.Cert == "" || f.Key == "":
		return nil, errors.New("a certificate needs its key, and a key its certificate")
	}
	pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	if f.ClientCA != "" {
		if cfg.ClientCAs, err = loadCAs(f.ClientCA); err != nil {
			return nil, err
		}
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}
