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
	"errors"
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
func FreePort() (int, error) {
	mu.Lock()
	defer mu.Unlock()
	for range 1000 {
		p := lo + rand.IntN(hi-lo)
		if handed[p] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		l.Close()
		handed[p] = true
		return p, nil
	}
	return 0, errors.New("testnet: no free port in 10000-19999")
}

// FreeAddr returns "127.0.0.1:<FreePort>".
func FreeAddr() (string, error) {
	p, err := FreePort()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("127.0.0.1:%d", p), nil
}
