package nomadtest

import (
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/thawhq/thaw/deploy"
)

// cutProxy forwards a loopback port to Nomad and can cut it: the listener
// closes and every connection drops, so thaw sees Nomad unreachable.
type cutProxy struct {
	addr, target string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	p := &cutProxy{addr: freeAddr(t), target: target, conns: map[net.Conn]bool{}}
	p.restore(t)
	t.Cleanup(p.cut)
	return p
}

func (p *cutProxy) restore(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
}

func (p *cutProxy) serve(c net.Conn) {
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	if p.ln == nil {
		p.mu.Unlock()
		c.Close()
		up.Close()
		return
	}
	p.conns[c], p.conns[up] = true, true
	p.mu.Unlock()
	go func() { _, _ = io.Copy(up, c); up.Close() }()
	_, _ = io.Copy(c, up)
	c.Close()
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// TestServerNomadUnreachable: with Nomad unreachable a warm deployment
// keeps serving, /healthz and the deploy object say Nomad is unreachable,
// a scale-up waits, and it happens by itself once Nomad is back.
func TestServerNomadUnreachable(t *testing.T) {
	needCluster(t)
	proxy := newCutProxy(t, strings.TrimPrefix(nomadURL, "http://"))
	s := startServer(t, serverOpts{nomadAddr: "http://" + proxy.addr})
	d := s.create(uniqueName("cut"), "H100-80GB", 1, 2, 1, 2)
	s.waitDeploy(d.ID, 60*time.Second, "running", func(d deploy.View) bool { return d.Instances.Running == 1 })

	proxy.cut()
	t.Log("cut thaw off from Nomad")
	if msg := checkChat(s.chat(d.FullName, 5)); msg != "" {
		t.Fatalf("warm request with Nomad unreachable: %s", msg)
	}
	if !waitFor(15*time.Second, 100*time.Millisecond, func() bool {
		r, err := s.do("GET", "/healthz", nil)
		return err == nil && strings.Contains(string(r.Body), `"nomad":"unreachable`)
	}) {
		t.Errorf("/healthz does not say Nomad is unreachable")
	}
	cut := s.waitDeploy(d.ID, 15*time.Second, "saying Nomad is unreachable", func(d deploy.View) bool {
		return strings.Contains(d.Instances.Reason, "Nomad is unreachable")
	})
	t.Logf("deploy object: %s", describe(cut))

	// Load for 2 instances: the scale-up waits for Nomad, requests wait
	// for capacity (or are served by the running instance).
	load := s.chats(d.FullName, 4, 1500)
	s.waitDeploy(d.ID, 15*time.Second, "wanting 2 instances", func(d deploy.View) bool { return d.Instances.Desired == 2 })
	time.Sleep(time.Second)
	if got := s.get(d.ID); got.Instances.Running != 1 {
		t.Errorf("scaled with Nomad unreachable?: %s", describe(got))
	}

	proxy.restore(t)
	t0 := time.Now()
	s.waitDeploy(d.ID, 30*time.Second, "scaled to 2 once Nomad is back", func(d deploy.View) bool { return d.Instances.Running == 2 })
	t.Logf("scaled up %v after Nomad came back", time.Since(t0).Round(time.Millisecond))
	for _, msg := range load() {
		t.Errorf("request during the outage: %s", msg)
	}
	s.delete(d.ID)
}
