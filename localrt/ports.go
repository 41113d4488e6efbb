package localrt

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// PortRange is the loopback TCP ports, First to Last inclusive, that the
// runtime gives its instances.
type PortRange struct{ First, Last int }

// DefaultPorts is Config.Ports' default.
var DefaultPorts = PortRange{First: 20000, Last: 20999}

// String formats r as ParsePortRange reads it: "20000-20999".
func (r PortRange) String() string { return fmt.Sprintf("%d-%d", r.First, r.Last) }

// ParsePortRange reads "FIRST-LAST" (both inclusive) or a single port.
func ParsePortRange(s string) (PortRange, error) {
	first, last, ok := strings.Cut(strings.TrimSpace(s), "-")
	if !ok {
		last = first
	}
	var r PortRange
	var err1, err2 error
	r.First, err1 = strconv.Atoi(strings.TrimSpace(first))
	r.Last, err2 = strconv.Atoi(strings.TrimSpace(last))
	if err1 != nil || err2 != nil {
		return PortRange{}, fmt.Errorf("port range %q: want FIRST-LAST, e.g. %s", s, DefaultPorts)
	}
	return r, r.validate()
}

func (r PortRange) validate() error {
	if r.First < 1 || r.Last > 65535 || r.First > r.Last {
		return fmt.Errorf("port range %s: want 1 <= FIRST <= LAST <= 65535", r)
	}
	return nil
}

// pickPortLocked returns the next port of Config.Ports, round-robin, that
// no live instance of this runtime has and that nothing else holds now. It
// never asks the kernel for a port: the range is the runtime's. Another
// process may still take the port between this check and the model
// server's bind; the model server then fails to bind and exits ("port N is
// in use"), its instance fails with that reason, and the fleet replaces it
// on the next port. Called with mu held.
func (r *Runtime) pickPortLocked() (int, error) {
	n := r.cfg.Ports.Last - r.cfg.Ports.First + 1
	taken := 0
	for range n {
		port := r.cfg.Ports.First + r.nextPort
		r.nextPort = (r.nextPort + 1) % n
		if r.ports[port] {
			continue
		}
		if !portFree(port) {
			taken++
			continue
		}
		r.ports[port] = true
		return port, nil
	}
	return 0, fmt.Errorf("no free port in %s: %d used by this runtime's instances, %d by other processes",
		r.cfg.Ports, n-taken, taken)
}

// portFree reports whether nothing listens on, or holds, 127.0.0.1:port.
func portFree(port int) bool {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	ln.Close()
	return true
}
