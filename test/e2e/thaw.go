package e2e

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/thawhq/thaw/test/testnet"
)

// ThawConfig says how to start one thaw process (dev, server or
// activator). Zero values pick the defaults noted on each field.
type ThawConfig struct {
	// Bin is the thaw binary; default ThawBin().
	Bin string
	// Args are the subcommand and its flags, without --addr and
	// --metrics-addr, which StartThaw adds on free loopback ports.
	Args []string
	// Addr is --addr (host:port); default a free loopback port. Set it
	// when another process must know it before this one starts.
	Addr string
	// Name labels the process; default "thaw <subcommand> <addr>".
	Name string
	// Env is added to CleanEnv (e.g. THAW_DEV_TOKEN, OTEL_*).
	Env []string
	// Proc are further process settings (Setpgid, Output, Keep,
	// StopTimeout, ...); its Args, Env and Name are ignored.
	Proc ProcConfig
	// Ready is how long StartThaw waits for GET /healthz to answer 200;
	// default 30s.
	Ready time.Duration
}

// Thaw is one running thaw process.
type Thaw struct {
	*Proc
	Base    string // http://127.0.0.1:port of --addr
	Metrics string // http://127.0.0.1:port of --metrics-addr (the operators' listener)
}

// StartThaw starts thaw with cfg and waits until GET /healthz is 200. On an
// error the process is stopped, and the error holds its output's tail.
func StartThaw(cfg ThawConfig) (*Thaw, error) {
	if err := orFind(&cfg.Bin, ThawBin); err != nil {
		return nil, err
	}
	if cfg.Ready == 0 {
		cfg.Ready = 30 * time.Second
	}
	addr := cfg.Addr
	if addr == "" {
		var err error
		if addr, err = testnet.FreeAddr(); err != nil {
			return nil, err
		}
	}
	metrics, err := testnet.FreeAddr()
	if err != nil {
		return nil, err
	}
	pc := cfg.Proc
	pc.Args = append(append([]string{cfg.Bin}, cfg.Args...), "--addr", addr, "--metrics-addr", metrics)
	pc.Env = cfg.Env
	pc.Name = cfg.Name
	if pc.Name == "" {
		sub := ""
		if len(cfg.Args) > 0 {
			sub = cfg.Args[0]
		}
		pc.Name = fmt.Sprintf("thaw %s %s", sub, addr)
	}
	p, err := Start(pc)
	if err != nil {
		return nil, err
	}
	th := &Thaw{Proc: p, Base: "http://" + addr, Metrics: "http://" + metrics}
	if err := WaitHealthy(p, th.Base+"/healthz", cfg.Ready); err != nil {
		p.Stop()
		return nil, err
	}
	return th, nil
}

// StartThawT is StartThaw for a test (see StartT).
func StartThawT(t testing.TB, cfg ThawConfig) *Thaw {
	t.Helper()
	Need(t, orFind(&cfg.Bin, ThawBin))
	return startT(t, func() (*Thaw, error) { return StartThaw(cfg) })
}

// WaitHealthy polls GET url every 20ms until it answers 200, p exits, or
// timeout passes. Its errors hold the tail of p's output.
func WaitHealthy(p *Proc, url string, timeout time.Duration) error {
	return p.WaitReady(timeout, 20*time.Millisecond, func() error {
		if code, status := Get(url); code != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, status)
		}
		return nil
	})
}

// Get sends GET url with a 1s timeout and returns the status code (0 on a
// transport error) and the status or error as text.
func Get(url string) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err.Error()
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Status
}
