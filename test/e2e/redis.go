package e2e

import (
	"bufio"
	"errors"
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
	_, port, _ := net.SplitHostPort(addr)
	r.Addr = addr
	r.Proc, err = Start(ProcConfig{
		Name: "redis-server " + addr,
		Args: []string{cfg.Bin, "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no", "--dir", cfg.Dir},
		Dir:  cfg.Dir, StopTimeout: 5 * time.Second,
	})
	if err != nil {
		return nil, err
	}
	err = r.WaitReady(10*time.Second, 20*time.Millisecond, func() error {
		if !Ping(addr) {
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
func Ping(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.TrimSpace(line) == "+PONG"
}
