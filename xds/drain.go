package xds

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// drainKey names one instance of one deployment.
type drainKey struct{ deploy, instance string }

// drainState is an instance that left, or is about to leave, load
// balancing.
type drainState struct {
	watched bool // a Drained call waits for it
	done    bool // a Drained call saw it idle
}

// Drained returns a channel closed once no Envoy in Config.EnvoyAdmin has a
// request in flight to the instance and each has seen it leave load
// balancing; the instance then leaves EDS. Without EnvoyAdmin, or for an
// instance the server does not know, it is closed at once. It is also closed
// when the server stops. It may be called before or after the SetEndpoints
// that takes the instance out.
func (s *Server) Drained(deployID, instanceID string) <-chan struct{} {
	ch := make(chan struct{})
	k := drainKey{deployID, instanceID}
	addr := ""
	s.mu.Lock()
	if d, ok := s.deployments[deployID]; ok {
		for _, e := range d.Endpoints {
			if e.ID == instanceID {
				addr = e.Addr
			}
		}
	}
	ds := s.drains[k]
	if addr != "" && len(s.cfg.EnvoyAdmin) > 0 {
		if ds == nil {
			ds = &drainState{}
			s.drains[k] = ds
		}
		ds.watched = true
	}
	s.mu.Unlock()
	if len(s.cfg.EnvoyAdmin) == 0 || addr == "" {
		close(ch)
		return ch
	}
	go func() {
		defer close(ch)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			select {
			case <-s.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		s.waitIdle(ctx, DeployClusterPrefix+deployID, addr)
		s.mu.Lock()
		ds.watched, ds.done = false, true
		if s.dropDrainingLocked(k) {
			delete(s.drains, k)
		}
		s.mu.Unlock()
		s.changed()
	}()
	return ch
}

// expireDrain drops an instance nobody waits for, DrainGrace after it left
// load balancing.
func (s *Server) expireDrain(k drainKey, ds *drainState) {
	s.mu.Lock()
	if s.drains[k] == ds && !ds.watched && s.dropDrainingLocked(k) {
		delete(s.drains, k)
	}
	s.mu.Unlock()
	s.changed()
}

// dropDrainingLocked removes the instance from EDS if it is draining, and
// reports whether it did. Called with mu held.
func (s *Server) dropDrainingLocked(k drainKey) bool {
	d, ok := s.deployments[k.deploy]
	if !ok {
		return true
	}
	for i, e := range d.Endpoints {
		if e.ID == k.instance && e.Draining {
			d.Endpoints = append(d.Endpoints[:i:i], d.Endpoints[i+1:]...)
			return true
		}
	}
	return false
}

// waitIdle polls until every Envoy reports the host draining with nothing
// in flight (or does not list it), or ctx is done.
func (s *Server) waitIdle(ctx context.Context, clusterName, addr string) {
	t := time.NewTicker(s.cfg.DrainPoll)
	defer t.Stop()
	for {
		idle := true
		for _, admin := range s.cfg.EnvoyAdmin {
			h, err := s.hostStats(ctx, admin, clusterName, addr)
			if err != nil {
				// An Envoy that does not answer has nothing in flight that
				// it could still deliver; say so and do not wait on it.
				s.log.Debug("xds: envoy admin unreachable while draining", "admin", admin, "err", err)
				continue
			}
			if h.listed && (!h.draining || h.active > 0) {
				idle = false
			}
		}
		if idle {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// hostStat is one upstream host as Envoy's admin /clusters reports it.
type hostStat struct {
	listed   bool
	draining bool
	active   int
}

// hostStats reads Envoy's /clusters (text: "cluster::host::stat::value").
func (s *Server) hostStats(ctx context.Context, admin, clusterName, addr string) (hostStat, error) {
	var h hostStat
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(admin, "/")+"/clusters", nil)
	if err != nil {
		return h, err
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return h, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return h, fmt.Errorf("admin /clusters: %s", resp.Status)
	}
	return parseHostStats(bufio.NewScanner(resp.Body), clusterName, addr)
}

func parseHostStats(sc *bufio.Scanner, clusterName, addr string) (hostStat, error) {
	var h hostStat
	prefix := clusterName + "::" + addr + "::"
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), prefix)
		if !ok {
			continue
		}
		h.listed = true
		name, val, _ := strings.Cut(rest, "::")
		switch name {
		case "rq_active":
			h.active, _ = strconv.Atoi(val)
		case "health_flags":
			h.draining = strings.Contains(val, "draining")
		}
	}
	return h, sc.Err()
}
