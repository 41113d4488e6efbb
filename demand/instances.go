package demand

import (
	"cmp"
	"slices"
	"sync"
)

// Instances learns which instance serves at each ready address, so that
// what the Scraper counts is kept per instance ID, not per address: a new
// instance can get the address of one that ended (ports are reused), and
// its counters must not be read as the old one's.
//
// The fleet's list of ready addresses (fleet.ReadyAddrs) carries no
// instance IDs; its endpoint updates do. Instances is one more receiver of
// those updates (the fleet.Endpoints fan-out in cmd/thaw), and Targets
// joins the two. The fleet sends an update with the lock under which its
// ready list changes, so an instance in the list was sent first; a
// draining instance leaves the updates but stays in the list (it still
// serves), so its ID is kept until the list drops it.
//
// The zero value is ready to use.
type Instances struct {
	// mu guards gen and ids.
	mu  sync.Mutex
	gen uint64                           // counts SetEndpoints calls
	ids map[string]map[string]instanceAt // deploy ID -> addr -> instance
}

// instanceAt is an instance at an address, learnt from update gen.
type instanceAt struct {
	id  string
	gen uint64
}

// SetEndpoints learns the routable instances of a deployment (id -> addr).
// Instances missing from addrs are kept: they may be draining.
func (b *Instances) SetEndpoints(deployID string, _ int, addrs map[string]string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.gen++
	if b.ids == nil {
		b.ids = map[string]map[string]instanceAt{}
	}
	m := b.ids[deployID]
	if m == nil {
		m = map[string]instanceAt{}
		b.ids[deployID] = m
	}
	for id, addr := range addrs {
		m[addr] = instanceAt{id: id, gen: b.gen}
	}
}

// closedCh is what Drained returns: the scraper holds no request.
var closedCh = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// Drained returns a closed channel: Instances has nothing in flight.
func (*Instances) Drained(string, string) <-chan struct{} { return closedCh }

// Fail does nothing: a failing deployment's ready list says it all.
func (*Instances) Fail(string, string) {}

// Recover does nothing.
func (*Instances) Recover(string) {}

// Remove does nothing: a removed deployment's instances are forgotten
// when the ready list no longer has them (they may still be draining).
func (*Instances) Remove(string) {}

// Targets returns the instances of ready (fleet.ReadyAddrs: deployment ->
// addresses), each with the ID learnt for its address ("" if none was),
// ordered by deployment and address. IDs of addresses no longer ready are
// forgotten, except those learnt after ready was called.
func (b *Instances) Targets(ready func() map[string][]string) []Target {
	b.mu.Lock()
	before := b.gen
	b.mu.Unlock()
	addrs := ready()

	b.mu.Lock()
	defer b.mu.Unlock()
	var out []Target
	listed := map[string]map[string]bool{}
	for deployID, as := range addrs {
		listed[deployID] = map[string]bool{}
		for _, a := range as {
			listed[deployID][a] = true
			out = append(out, Target{DeployID: deployID, InstanceID: b.ids[deployID][a].id, Addr: a})
		}
	}
	for deployID, m := range b.ids {
		for a, in := range m {
			if in.gen <= before && !listed[deployID][a] {
				delete(m, a)
			}
		}
		if len(m) == 0 {
			delete(b.ids, deployID)
		}
	}
	slices.SortFunc(out, func(x, y Target) int {
		return cmp.Or(cmp.Compare(x.DeployID, y.DeployID), cmp.Compare(x.Addr, y.Addr))
	})
	return out
}
