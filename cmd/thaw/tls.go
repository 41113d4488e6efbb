package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
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
// when no file is set: cleartext. The certificate follows its files
// (certReloader), which log tells about; the client CAs are read once.
func (f serverTLSFiles) config(log *slog.Logger) (*tls.Config, error) {
	switch {
	case f == (serverTLSFiles{}):
		return nil, nil
	case f.Cert == "" && f.Key == "":
		return nil, errors.New("a client CA needs the server's certificate and key")
	case f.Cert == "" || f.Key == "":
		return nil, errors.New("a certificate needs its key, and a key its certificate")
	}
	certs, err := newCertReloader(f.Cert, f.Key, log)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{GetCertificate: certs.GetCertificate, MinVersion: tls.VersionTLS12}
	if f.ClientCA != "" {
		if cfg.ClientCAs, err = loadCAs(f.ClientCA); err != nil {
			return nil, err
		}
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// certReloader serves a certificate and key from their files and reloads
// them when either file's modification time changes, so that an operator
// rotates the certificate without restarting thaw. The files are checked at
// each TLS handshake: xDS connections are few and long-lived. A new pair
// that does not load is logged and the previous one kept.
type certReloader struct {
	cert, key string
	log       *slog.Logger

	// mu guards pair and mtimes.
	mu     sync.Mutex
	pair   *tls.Certificate
	mtimes [2]time.Time // of cert and key when pair was loaded
}

// newCertReloader loads the pair once; its error is the caller's.
func newCertReloader(cert, key string, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{cert: cert, key: key, log: log}
	if err := r.load(r.stat()); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *certReloader) stat() [2]time.Time {
	var m [2]time.Time
	for i, path := range []string{r.cert, r.key} {
		if fi, err := os.Stat(path); err == nil {
			m[i] = fi.ModTime()
		}
	}
	return m
}

// load reads the pair. Called with mu held, or before r is shared.
func (r *certReloader) load(mtimes [2]time.Time) error {
	pair, err := tls.LoadX509KeyPair(r.cert, r.key)
	if err != nil {
		return err
	}
	r.pair, r.mtimes = &pair, mtimes
	return nil
}

// GetCertificate is tls.Config's: the current pair, reloaded first when
// its files changed.
func (r *certReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	m := r.stat()
	r.mu.Lock()
	defer r.mu.Unlock()
	if m != r.mtimes {
		if err := r.load(m); err != nil {
			// Kept from retrying at every handshake until the files change again.
			r.mtimes = m
			r.log.Error("tls: the new certificate does not load; serving the previous one", "cert", r.cert, "key", r.key, "err", err)
		} else {
			r.log.Info("tls: certificate reloaded", "cert", r.cert)
		}
	}
	return r.pair, nil
}
