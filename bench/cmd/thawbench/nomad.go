package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/thawhq/thaw/test/e2e"
)

// nomadGPUs are the fake GPUs of the bench's agent.
const nomadGPUs = "NVIDIA H100 80GB HBM3:4"

// nomadCluster is a one-node `nomad agent -dev` with thaw's fake GPU
// plugin, plus a Redis: what `make cluster` starts, on free ports.
type nomadCluster struct {
	*e2e.Nomad
	redis *e2e.Redis
	tmp   string
}

// startNomad starts Redis and the agent from binDir (bin/) and waits until
// the node is ready with its 4 fake GPUs.
func startNomad(binDir string) (*nomadCluster, error) {
	abs, err := filepath.Abs(binDir)
	if err != nil {
		return nil, err
	}
	for _, f := range []string{"nomad", "redis-server", "plugins/thaw-fakegpu"} {
		if _, err := os.Stat(filepath.Join(abs, f)); err != nil {
			return nil, fmt.Errorf("%w (run make deps)", err)
		}
	}
	tmp, err := os.MkdirTemp("", "thawbench-nomad-")
	if err != nil {
		return nil, err
	}
	c := &nomadCluster{tmp: tmp}
	if c.redis, err = e2e.StartRedis(e2e.RedisConfig{Bin: filepath.Join(abs, "redis-server"), Dir: tmp}); err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	c.Nomad, err = e2e.StartNomad(e2e.NomadConfig{
		Bin: filepath.Join(abs, "nomad"), PluginDir: filepath.Join(abs, "plugins"), GPUs: nomadGPUs, Dir: tmp,
	})
	if err != nil {
		c.redis.Stop()
		os.RemoveAll(tmp)
		return nil, err
	}
	return c, nil
}

// startServer starts `thaw server --engine sim` against the cluster with
// extra flags; user dev's token is the bench's token.
func (c *nomadCluster) startServer(bin string, extra ...string) (*thawProc, error) {
	dir, err := os.MkdirTemp("", "thawbench-server-")
	if err != nil {
		return nil, err
	}
	h := sha256.Sum256([]byte(token))
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(users, []byte("dev sha256:"+hex.EncodeToString(h[:])+"\n"), 0o600); err != nil {
		return nil, err
	}
	args := append([]string{"server", "--engine", "sim", "--nomad-addr", c.URL, "--redis-addr", c.redis.Addr,
		"--data-dir", dir, "--users-file", users, "--adopt-grace", "1s"}, extra...)
	return launchThaw(bin, dir, args)
}

// Stop stops the agent (purging every job first and cleaning up what it
// leaves, see e2e.Nomad.Stop) and Redis, and removes their directory.
func (c *nomadCluster) Stop() {
	_ = c.Nomad.Stop()
	c.redis.Stop()
	time.Sleep(200 * time.Millisecond)
	os.RemoveAll(c.tmp)
}
