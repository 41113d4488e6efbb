package proxy

import (
	"context"
	"net"
	"net/http"
	"sync"
	"testing"
)

type countRT struct {
	mu sync.Mutex
	c  []string
}

func (c *countRT) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	c.mu.Lock()
	c.c = append(c.c, r.URL.Host+" "+func() string {
		if err != nil {
			return err.Error()
		}
		return "ok"
	}())
	c.mu.Unlock()
	return resp, err
}

func TestZZDebug4(t *testing.T) {
	rt := &countRT{}
	h := newHarness(t, Config{Transport: rt})
	good := newBlockingUpstream(t)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	h.p.SetEndpoints("d1", 4, map[string]string{"good": good.addr()})
	first := h.postAsync(context.Background(), "alice", "/v1/chat/completions", seqBody(1))
	good.next(t)
	h.p.SetEndpoints("d1", 4, map[string]string{"good": good.addr(), "dead": dead})
	pl := h.p.pool("d1")
	pl.mu.Lock()
	for id, ep := range pl.endpoints {
		t.Log(id, ep.addr, ep.inflight)
	}
	pl.mu.Unlock()
	second := h.postAsync(context.Background(), "alice", "/v1/chat/completions", seqBody(2))
	good.next(t)
	good.releaseOne(t)
	good.releaseOne(t)
	<-first
	<-second
	t.Log(good.addr(), dead, rt.c)
}
