// Package nomadtest holds the end-to-end tests of thaw's Nomad runtime
// against a real one-node Nomad (bin/nomad, `nomad agent -dev`) with the
// fake GPU device plugin (bin/plugins/thaw-fakegpu): 4 x "NVIDIA H100 80GB
// HBM3" and 2 x "NVIDIA A100-SXM4-80GB". `make deps` builds both. Without
// them the tests skip, except with CI set, where they fail.
package nomadtest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/thawhq/thaw/test/e2e"
	"github.com/thawhq/thaw/test/testnet"

	"github.com/hashicorp/nomad/api"
)

// Fake GPUs of the test agent.
const (
	h100 = "NVIDIA H100 80GB HBM3"
	a100 = "NVIDIA A100-SXM4-80GB"
)

// Set up once by TestMain.
var (
	root     string // repository root
	thawBin  string // thaw built for this run
	nomadURL string // http://127.0.0.1:<port> of the test agent
	// setupErr says why the topology could not start; skipSetup says it
	// is missing on a developer machine (not CI), where tests skip.
	setupErr  string
	skipSetup bool
)

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	tmp, err := os.MkdirTemp("", "thaw-nomad-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkdir temp:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	agent, err := setup(tmp)
	if err != nil {
		setupErr = err.Error()
		skipSetup = errors.Is(err, e2e.ErrMissing) && os.Getenv("CI") == ""
	}
	code := e2e.Main(m)
	if agent != nil {
		if err := agent.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "nomad e2e teardown:", err)
			code = 1
		}
	}
	return code
}

// needCluster skips or fails the test when the topology is missing.
func needCluster(t *testing.T) {
	t.Helper()
	if setupErr == "" {
		return
	}
	if skipSetup {
		t.Skipf("Nomad e2e: %s (run `make deps`; with CI set this fails)", setupErr)
	}
	t.Fatalf("Nomad e2e setup: %s", setupErr)
}

// setup builds thaw (or takes $THAW_BIN) and starts the agent with 4 H100s
// and 2 A100s.
func setup(tmp string) (*e2e.Nomad, error) {
	var err error
	if root, err = e2e.RepoRoot(); err != nil {
		return nil, err
	}
	if _, err := e2e.RepoBin("redis-server"); err != nil {
		return nil, err
	}
	if thawBin, err = e2e.ThawBin(); err != nil {
		return nil, err
	}
	agent, err := e2e.StartNomad(e2e.NomadConfig{GPUs: h100 + ":4," + a100 + ":2", Dir: tmp})
	if err != nil {
		return nil, err
	}
	nomadURL = agent.URL
	return agent, nil
}

func nomadClient() *api.Client { return sharedClient() }

// sharedClient is the package's one client of the shared agent: each
// client keeps its own idle connections, and a test polling with a new one
// every 100 ms (while a restarted thaw server waits out its dead
// predecessor's lock, 20 s) opened over 100 and got Nomad's 429 "too many
// concurrent connections" (http_max_conns_per_client).
var sharedClient = sync.OnceValue(func() *api.Client {
	c, err := api.NewClient(&api.Config{Address: nomadURL})
	if err != nil {
		panic(err) // only fails on a malformed config
	}
	return c
})

func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		p, err := testnet.FreePort()
		if err != nil {
			return nil, err
		}
		ports = append(ports, p)
	}
	return ports, nil
}

// waitFor polls cond every interval until it holds or timeout passes.
func waitFor(timeout, interval time.Duration, cond func() bool) bool {
	return e2e.Eventually(timeout, interval, cond)
}

// httpGet returns the status of GET url ("" on a transport error).
func httpGet(ctx context.Context, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer = e2e.Buffer
