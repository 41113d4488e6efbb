package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/thawhq/thaw/internal/envoytest"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/thawhq/thaw/internal/certtest"
	"github.com/thawhq/thaw/xds"
)

// redisFlagsFrom parses Redis flags as a command does.
func redisFlagsFrom(t *testing.T, args ...string) redisFlags {
	t.Helper()
	var r redisFlags
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	r.register(fs, "the Redis")
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRedisOptions(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(ca, certtest.NewCAT(t, "ca").PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	// view is what the client will do, flattened.
	type view struct {
		Addr, User, Password string
		DB                   int
		TLS                  bool
		ServerName           string
		CustomCA             bool
	}
	tests := []struct {
		name string
		env  string
		args []string
		want view
	}{
		{"host:port", "", []string{"--redis-addr", "10.0.0.7:6379"}, view{Addr: "10.0.0.7:6379"}},
		{"password from the environment", "env-pw", []string{"--redis-addr", "r:6379"}, view{Addr: "r:6379", Password: "env-pw"}},
		{"password flag wins", "env-pw", []string{"--redis-addr", "r:6379", "--redis-password", "flag-pw"}, view{Addr: "r:6379", Password: "flag-pw"}},
		{"URL", "", []string{"--redis-addr", "redis://thaw:url-pw@r:6380/2"}, view{Addr: "r:6380", User: "thaw", Password: "url-pw", DB: 2}},
		{"URL's password over the environment", "env-pw", []string{"--redis-addr", "redis://:url-pw@r:6380"}, view{Addr: "r:6380", Password: "url-pw"}},
		{"rediss: system CAs", "", []string{"--redis-addr", "rediss://redis.internal:6380"},
			view{Addr: "redis.internal:6380", TLS: true, ServerName: "redis.internal"}},
		{"rediss with a CA", "", []string{"--redis-addr", "rediss://redis.internal:6380", "--redis-ca", ca},
			view{Addr: "redis.internal:6380", TLS: true, ServerName: "redis.internal", CustomCA: true}},
		{"host:port with a CA is TLS", "", []string{"--redis-addr", "127.0.0.1:6380", "--redis-ca", ca},
			view{Addr: "127.0.0.1:6380", TLS: true, ServerName: "127.0.0.1", CustomCA: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(redisPasswordEnv, tc.env)
			opts, err := redisFlagsFrom(t, tc.args...).redisOptions()
			if err != nil {
				t.Fatal(err)
			}
			got := view{Addr: opts.Addr, User: opts.Username, Password: opts.Password, DB: opts.DB, TLS: opts.TLSConfig != nil}
			if c := opts.TLSConfig; c != nil {
				got.ServerName, got.CustomCA = c.ServerName, c.RootCAs != nil
				if c.MinVersion < tls.VersionTLS12 {
					t.Errorf("TLS MinVersion %x, want at least 1.2", c.MinVersion)
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("options (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRedisOptionsRejects(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.txt")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--redis-addr", "redis://:s3cret@r:6379", "--redis-ca", notPEM}, "use rediss://"},
		{[]string{"--redis-addr", "r:6379", "--redis-ca", filepath.Join(dir, "missing.crt")}, "--redis-ca: open"},
		{[]string{"--redis-addr", "r:6379", "--redis-ca", notPEM}, "no PEM certificate"},
		{[]string{"--redis-addr", "http://:s3cret@r:6379"}, "invalid URL scheme"},
		{[]string{"--redis-addr", "redis-host"}, "want host:port or a redis://"},
		{[]string{"--redis-addr", "rediss://:s3cret@r:6379/%zz"}, "not a valid URL"},
	}
	for _, tc := range tests {
		_, err := redisFlagsFrom(t, tc.args...).redisOptions()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error containing %q", tc.args, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%q: the error shows the password: %v", tc.args, err)
		}
	}
	if got := redisFlagsFrom(t, "--redis-addr", "rediss://thaw:s3cret@r:6379/1").redacted(); got != "rediss://thaw:xxxxx@r:6379/1" {
		t.Errorf("redacted = %q", got)
	}
}

// TestRedisTLS: thaw's client reaches a Redis serving TLS with AUTH when
// given its CA and password, and fails to without either.
func TestRedisTLS(t *testing.T) {
	t.Setenv(redisPasswordEnv, "")
	ca := certtest.NewCAT(t, "redis CA")
	mr := miniredis.NewMiniRedis()
	mr.RequireAuth("s3cret")
	if err := mr.StartTLS(&tls.Config{Certificates: []tls.Certificate{ca.IssueT(t, "redis", "127.0.0.1").TLS}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mr.Close)
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	url := "rediss://127.0.0.1:" + mr.Port()
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"CA and password", []string{"--redis-addr", url, "--redis-ca", caFile, "--redis-password", "s3cret"}, ""},
		{"password in the URL", []string{"--redis-addr", "rediss://:s3cret@127.0.0.1:" + mr.Port(), "--redis-ca", caFile}, ""},
		{"no CA", []string{"--redis-addr", url, "--redis-password", "s3cret"}, "certificate signed by unknown authority"},
		{"wrong password", []string{"--redis-addr", url, "--redis-ca", caFile, "--redis-password", "nope"}, "WRONGPASS"},
		{"cleartext", []string{"--redis-addr", "127.0.0.1:" + mr.Port(), "--redis-password", "s3cret"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rdb, err := redisFlagsFrom(t, tc.args...).newRedisClient()
			if err != nil {
				t.Fatal(err)
			}
			defer rdb.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err = rdb.Ping(ctx).Err()
			switch {
			case tc.name == "cleartext":
				if err == nil {
					t.Fatal("PING in cleartext to a TLS port answered")
				}
			case tc.wantErr == "" && err != nil:
				t.Fatalf("PING: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("PING: %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestServerTLSFiles(t *testing.T) {
	dir := t.TempDir()
	ca := certtest.NewCAT(t, "ca")
	f := ca.WriteT(t, dir, "xds", "127.0.0.1")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg, err := serverTLSFiles{}.config(log)
	if cfg != nil || err != nil {
		t.Errorf("no files: %v, %v; want cleartext", cfg, err)
	}
	cfg, err = serverTLSFiles{Cert: f.Cert, Key: f.Key}.config(log)
	if err != nil || cfg.GetCertificate == nil || cfg.ClientAuth != tls.NoClientCert || cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("server TLS: %+v, %v", cfg, err)
	}
	cfg, err = serverTLSFiles{Cert: f.Cert, Key: f.Key, ClientCA: f.CA}.config(log)
	if err != nil || cfg.ClientAuth != tls.RequireAndVerifyClientCert || cfg.ClientCAs == nil {
		t.Errorf("mutual TLS: %+v, %v", cfg, err)
	}
	for name, bad := range map[string]serverTLSFiles{
		"cert without key":   {Cert: f.Cert},
		"key without cert":   {Key: f.Key},
		"client CA alone":    {ClientCA: f.CA},
		"key not the cert's": {Cert: f.Cert, Key: ca.WriteT(t, t.TempDir(), "other", "127.0.0.1").Key},
		"client CA not PEM":  {Cert: f.Cert, Key: f.Key, ClientCA: f.Key},
	} {
		if _, err := bad.config(log); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestCertReloader: a rotated certificate is served from the next
// handshake on; one that does not load is logged and the previous one kept.
func TestCertReloader(t *testing.T) {
	dir := t.TempDir()
	ca := certtest.NewCAT(t, "ca")
	f := ca.WriteT(t, dir, "xds", "127.0.0.1")
	var logs bytes.Buffer
	r, err := newCertReloader(f.Cert, f.Key, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	served := func() string {
		t.Helper()
		pair, err := r.GetCertificate(nil)
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return leaf.Subject.CommonName
	}
	// write replaces the files, with a later modification time than any
	// before (a file system's clock may be coarse).
	later := time.Now()
	write := func(cert, key []byte) {
		t.Helper()
		later = later.Add(time.Minute)
		for path, b := range map[string][]byte{f.Cert: cert, f.Key: key} {
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(path, later, later); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := served(); got != "xds" {
		t.Fatalf("serves %q, want xds", got)
	}
	rotated := ca.IssueT(t, "xds-rotated", "127.0.0.1")
	write(rotated.CertPEM, rotated.KeyPEM)
	if got := served(); got != "xds-rotated" {
		t.Errorf("after rotation serves %q, want xds-rotated", got)
	}
	write([]byte("half-written"), rotated.KeyPEM)
	if got := served(); got != "xds-rotated" {
		t.Errorf("after a bad write serves %q, want the previous xds-rotated", got)
	}
	if !strings.Contains(logs.String(), "does not load") {
		t.Errorf("a certificate that does not load is not logged:\n%s", logs.String())
	}
}

func TestEdgeFlagsTLS(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	f := certtest.NewCAT(t, "ca").WriteT(t, t.TempDir(), "xds", "127.0.0.1")
	base := edgeFlags{xdsAddr: "127.0.0.1:0", listen: "127.0.0.1:10000"}
	ok := base
	ok.xdsTLS = serverTLSFiles{Cert: f.Cert, Key: f.Key, ClientCA: f.CA}
	ok.listenTLS = xds.ListenerTLS{CertFile: "/etc/envoy/edge.crt", KeyFile: "/etc/envoy/edge.key"}
	if xs, err := ok.newXDS(":8080", time.Minute, log); xs == nil || err != nil {
		t.Errorf("newXDS with TLS = %v, %v", xs, err)
	}
	tests := map[string]func(*edgeFlags){
		"xds TLS without --xds-addr":  func(e *edgeFlags) { e.xdsAddr, e.xdsTLS = "", ok.xdsTLS },
		"edge TLS without --xds-addr": func(e *edgeFlags) { e.xdsAddr, e.listenTLS = "", ok.listenTLS },
		"edge cert without key":       func(e *edgeFlags) { e.listenTLS.CertFile = "/edge.crt" },
		"xds key without cert":        func(e *edgeFlags) { e.xdsTLS.Key = f.Key },
		"xds cert file missing":       func(e *edgeFlags) { e.xdsTLS = serverTLSFiles{Cert: f.Cert + ".gone", Key: f.Key} },
	}
	for name, mutate := range tests {
		e := base
		mutate(&e)
		if _, err := e.newXDS(":8080", time.Minute, log); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestEnvoyBootstrapTLS: the bootstrap's ADS cluster connects over mutual
// TLS with the files given, and Envoy accepts it.
func TestEnvoyBootstrapTLS(t *testing.T) {
	dir := t.TempDir()
	ca := certtest.NewCAT(t, "ca")
	f := ca.WriteT(t, dir, "envoy")
	var out bytes.Buffer
	args := []string{"--xds-addr", "127.0.0.1:18000", "--xds-ca", f.CA, "--xds-client-cert", f.Cert, "--xds-client-key", f.Key}
	if err := runEnvoyBootstrap(context.Background(), args, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	var b struct {
		StaticResources struct {
			Clusters []struct {
				TransportSocket struct {
					Name        string
					TypedConfig struct {
						CommonTLSContext struct {
							TLSCertificates []struct {
								CertificateChain struct{ Filename string }
							} `json:"tlsCertificates"`
							ValidationContext struct {
								TrustedCA struct{ Filename string } `json:"trustedCa"`
							}
						} `json:"commonTlsContext"`
					}
				}
			}
		}
	}
	if err := json.Unmarshal(out.Bytes(), &b); err != nil {
		t.Fatal(err)
	}
	ts := b.StaticResources.Clusters[0].TransportSocket
	got := []string{ts.Name, ts.TypedConfig.CommonTLSContext.ValidationContext.TrustedCA.Filename}
	for _, c := range ts.TypedConfig.CommonTLSContext.TLSCertificates {
		got = append(got, c.CertificateChain.Filename)
	}
	if diff := cmp.Diff([]string{"envoy.transport_sockets.tls", f.CA, f.Cert}, got); diff != "" {
		t.Errorf("ADS cluster's transport socket (-want +got):\n%s", diff)
	}
	envoytest.Validate(t, out.Bytes())

	if err := runEnvoyBootstrap(context.Background(), []string{"--xds-client-cert", f.Cert, "--xds-client-key", f.Key}, io.Discard, io.Discard); err == nil {
		t.Error("a client certificate without --xds-ca: no error")
	}
}

// TestNomadClientTLS: the Nomad client takes its TLS settings from Nomad's
// environment, as the nomad CLI does: with NOMAD_CACERT, NOMAD_CLIENT_CERT
// and NOMAD_CLIENT_KEY it reaches an agent that requires a client
// certificate; without them it is refused. The flags' address and token and
// jobs.json's namespace and region win over the environment.
func TestNomadClientTLS(t *testing.T) {
	dir := t.TempDir()
	ca := certtest.NewCAT(t, "nomad CA")
	client := ca.WriteT(t, dir, "thaw", "client.global.nomad")
	var token string
	agent := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token = r.Header.Get("X-Nomad-Token")
		fmt.Fprintln(w, `"127.0.0.1:4647"`) // GET /v1/status/leader
	}))
	agent.TLS = &tls.Config{
		Certificates: []tls.Certificate{ca.IssueT(t, "server.global.nomad", "127.0.0.1").TLS},
		ClientAuth:   tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool(),
	}
	agent.Config.ErrorLog = stdlog.New(io.Discard, "", 0) // the refused handshakes
	agent.StartTLS()
	t.Cleanup(agent.Close)

	for _, k := range []string{"NOMAD_CAPATH", "NOMAD_TLS_SERVER_NAME", "NOMAD_SKIP_VERIFY", "NOMAD_HTTP_AUTH"} {
		t.Setenv(k, "")
	}
	t.Setenv("NOMAD_ADDR", "https://nomad.invalid:4646")
	t.Setenv("NOMAD_TOKEN", "env-token")
	t.Setenv("NOMAD_NAMESPACE", "env-ns")
	t.Setenv("NOMAD_REGION", "env-region")
	leader := func() error {
		c, err := nomadapi.NewClient(nomadClientConfig(agent.URL, "flag-token", "", "eu"))
		if err != nil {
			return err
		}
		_, err = c.Status().Leader()
		return err
	}
	t.Setenv("NOMAD_CACERT", client.CA)
	if err := leader(); err == nil {
		t.Error("without a client certificate: the agent answered")
	}
	t.Setenv("NOMAD_CLIENT_CERT", client.Cert)
	t.Setenv("NOMAD_CLIENT_KEY", client.Key)
	if err := leader(); err != nil {
		t.Fatalf("with NOMAD_CACERT, NOMAD_CLIENT_CERT and NOMAD_CLIENT_KEY: %v", err)
	}
	if token != "flag-token" {
		t.Errorf("token sent %q, want the flag's", token)
	}
	c := nomadClientConfig(agent.URL, "flag-token", "", "eu")
	got := []string{c.Address, c.Namespace, c.Region}
	if diff := cmp.Diff([]string{agent.URL, "env-ns", "eu"}, got); diff != "" {
		t.Errorf("address, namespace, region (-want +got):\n%s", diff)
	}
	t.Setenv("NOMAD_CACERT", "")
	if err := leader(); err == nil {
		t.Error("without NOMAD_CACERT: the agent's certificate was trusted")
	}
}

// TestEmbeddedRedisRefusesTLSFlags: thaw dev's embedded Redis is
// cleartext, so --redis-ca or --redis-password without --redis-addr is a
// mistake, not something to ignore.
func TestEmbeddedRedisRefusesTLSFlags(t *testing.T) {
	for _, r := range []redisFlags{{caFile: "/ca.crt"}, {password: "pw"}} {
		_, err := startProcess(t.Context(), processConfig{Service: "thaw-test", Redis: r, EmbeddedRedis: true, Stderr: io.Discard})
		if err == nil || !strings.Contains(err.Error(), "not the embedded one") {
			t.Errorf("%+v without --redis-addr: %v", r, err)
		}
	}
}
