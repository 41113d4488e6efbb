// Package testnet hands out loopback ports for end-to-end tests.
//
// Ports come from 10000-19999: below Linux's ephemeral range (32768-60999),
// so an outgoing connection (Envoy to its upstreams, a client to a server)
// can never take a port between the moment it is handed out and the moment
// the process under test binds it, which is what `:0`-then-close allows; and
// below Nomad's dynamic port range (20000-32000), which the Nomad tests'
// allocations use. Each port is handed out once per process.
package testnet

import (
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
)

const lo, hi = 10000, 20000

var (
	mu     sync.Mutex
	handed = map[int]bool{}
)

// FreePort returns a loopback port that is free now and not handed out
// before by this process.
func FreePort() (int, error) { return FreePortRun(1) }

// FreePortRun returns the first of n consecutive loopback ports that are
// free now and not handed out before by this process (a Nomad agent takes
// its HTTP port and the next two).
func FreePortRun(n int) (int, error) {
	mu.Lock()
	defer mu.Unlock()
	for range 1000 {
		p := lo + rand.IntN(hi-lo-n)
		if runFree(p, n) {
			for i := range n {
				handed[p+i] = true
			}
			return p, nil
		}
	}
	return 0, fmt.Errorf("testnet: no %d consecutive free ports in 10000-19999", n)
}

// runFree says whether ports p to p+n-1 are not handed out and free now.
func runFree(p, n int) bool {
	for i := range n {
		if handed[p+i] {
			return false
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+i))
		if err != nil {
			return false
		}
		l.Close()
	}
	return true
}

// FreeAddr returns "127.0.0.1:<FreePort>".
func FreeAddr() (string, error) {
	p, err := FreePort()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("127.0.0.1:%d", p), nil
}
