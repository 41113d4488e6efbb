package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"bytes"
)

type logRT struct{ t *testing.T }

func (c logRT) RoundTrip(r *http.Request) (*http.Response, error) {
	b, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(b))
	pl := r.Context().Value(attemptKey{})
	c.t.Log("RT", r.URL.Host, string(b), fmt.Sprintf("%+v", pl))
	return http.DefaultTransport.RoundTrip(r)
}

func TestZZDebug7(t *testing.T) {
	h := newHarness(t, Config{Transport: logRT{t}})
	good := newBlockingUpstream(t)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	h.p.SetEndpoints("d1", 4, map[string]string{"good": good.addr()})
	first := h.postAsync(context.Background(), "alice", "/v1/chat/completions", seqBody(1))
	good.next(t)
	h.p.SetEndpoints("d1", 4, map[string]string{"good": good.addr(), "dead": dead})
	t.Log("dead", dead)
	second := h.postAsync(context.Background(), "alice", "/v1/chat/completions", seqBody(2))
	good.next(t)
	good.releaseOne(t)
	good.releaseOne(t)
	<-first
	<-second
}
