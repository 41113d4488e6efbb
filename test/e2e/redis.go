package e2e

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/thawhq/thaw/test/testnet"
)

// RedisConfig says how to start one throw-away redis-server (no
// persistence). Zero values pick the defaults noted on each field.
type RedisConfig struct {
	// Bin is the redis-server binary; default redis-server on PATH.
	Bin string
	// Dir is its working directory; default a new temporary one, removed
	// by Stop.
	Dir string
	// TLS, when its files are set, makes the port TLS only (no cleartext
	// port); clients are not asked for a certificate.
	TLS RedisTLS
	// Password, when set, is required of clients (AUTH).
	Password string
}

// RedisTLS are the PEM files of a TLS redis-server.
type RedisTLS struct {
	// CertFile and KeyFile are the server's certificate (for 127.0.0.1)
	// and key.
	CertFile, KeyFile string
	// CAFile is the CA that signed CertFile; StartRedis trusts it when it
	// pings the server.
	CAFile string
}

// Redis is one running redis-server on a loopback port.
type Redis struct {
	*Proc
	Addr string // 127.0.0.1:port
	tmp  string // removed by Stop
}

// StartRedis starts redis-server and waits until it answers PING.
func StartRedis(cfg RedisConfig) (*Redis, error) {
	if err := orFind(&cfg.Bin, func() (string, error) { return LookPath("redis-server") }); err != nil {
		return nil, err
	}
	r := &Redis{}
	if cfg.Dir == "" {
		dir, err := os.MkdirTemp("", "thaw-e2e-redis-")
		if err != nil {
			return nil, err
		}
		cfg.Dir, r.tmp = dir, dir
	}
	addr, err := testnet.FreeAddr()
	if err != nil {
		return nil, err
	}
	r.Addr = addr
	args, ping, err := redisArgs(cfg, addr)
	if err != nil {
		return nil, err
	}
	r.Proc, err = Start(ProcConfig{
		Name: "redis-server " + addr,
		Args: args,
		Dir:  cfg.Dir, StopTimeout: 5 * time.Second,
	})
	if err != nil {
		return nil, err
	}
	err = r.WaitReady(10*time.Second, 20*time.Millisecond, func() error {
		if !ping() {
			return errors.New("no answer to PING")
		}
		return nil
	})
	if err != nil {
		r.Stop()
		return nil, err
	}
	return r, nil
}

// redisArgs are redis-server's command line for cfg on addr, and how to
// ping it.
func redisArgs(cfg RedisConfig, addr string) ([]string, func() bool, error) {
	_, port, _ := net.SplitHostPort(addr)
	args := []string{cfg.Bin, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", cfg.Dir}
	if cfg.Password != "" {
		args = append(args, "--requirepass", cfg.Password)
	}
	if cfg.TLS.CertFile == "" {
		return append(args, "--port", port), func() bool { return pingAuth(addr, nil, cfg.Password) }, nil
	}
	args = append(args, "--port", "0", "--tls-port", port,
		"--tls-cert-file", cfg.TLS.CertFile, "--tls-key-file", cfg.TLS.KeyFile,
		"--tls-ca-cert-file", cfg.TLS.CAFile, "--tls-auth-clients", "no")
	ca, err := os.ReadFile(cfg.TLS.CAFile)
	if err != nil {
		return nil, nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca) {
		return nil, nil, fmt.Errorf("redis: %s holds no PEM certificate", cfg.TLS.CAFile)
	}
	tc := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}
	return args, func() bool { return pingAuth(addr, tc, cfg.Password) }, nil
}

// Stop ends redis-server and removes the directory StartRedis made.
func (r *Redis) Stop() bool {
	ok := r.Proc.Stop()
	if r.tmp != "" {
		os.RemoveAll(r.tmp)
	}
	return ok
}

// RedisT is StartRedis for a test (see StartT and Need); it returns the
// address.
func RedisT(t testing.TB, cfg RedisConfig) string {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	r, err := StartRedis(cfg)
	Need(t, err)
	r.CleanupWith(t, r.Stop)
	return r.Addr
}

// Ping reports whether the Redis at addr answers PING with PONG.
func Ping(addr string) bool { return pingAuth(addr, nil, "") }

// pingAuth is Ping over TLS with tc (nil: cleartext), after AUTH with
// password when it is set.
func pingAuth(addr string, tc *tls.Config, password string) bool {
	d := &net.Dialer{Timeout: time.Second}
	var c net.Conn
	var err error
	if tc != nil {
		c, err = tls.DialWithDialer(d, "tcp", addr, tc)
	} else {
		c, err = d.Dial("tcp", addr)
	}
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	cmd := "*1\r\n$4\r\nPING\r\n"
	if password != "" {
		cmd = fmt.Sprintf("*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n", len(password), password) + cmd
	}
	if _, err := c.Write([]byte(cmd)); err != nil {
		return false
	}
	br := bufio.NewReader(c)
	if password != "" {
		if line, err := br.ReadString('\n'); err != nil || strings.TrimSpace(line) != "+OK" {
			return false
		}
	}
	line, err := br.ReadString('\n')
	return err == nil && strings.TrimSpace(line) == "+PONG"
}
