package xds

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/thawhq/thaw/internal/runtest"
)

// startServer runs a Server on a loopback port and returns a connection to
// it.
func startServer(t *testing.T, admin ...string) (*Server, *grpc.ClientConn) {
	return startServerGrace(t, 0, admin...)
}

// startADS runs a Server and returns an ADS client of it, with a context
// that ends with the test (after 10s at the most) for its streams.
func startADS(t *testing.T) (*Server, context.Context, discovery.AggregatedDiscoveryServiceClient) {
	s, conn := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return s, ctx, discovery.NewAggregatedDiscoveryServiceClient(conn)
}

func startServerGrace(t *testing.T, grace time.Duration, admin ...string) (*Server, *grpc.ClientConn) {
	t.Helper()
	s, addr := runServer(t, Config{EnvoyAdmin: admin, DrainPoll: 10 * time.Millisecond, DrainGrace: grace})
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return s, conn
}

// runServer runs a Server with cfg, on a new listener on 127.0.0.1 and
// with a fixed edge state and a silent logger, until the test ends. It
// returns the server and its address.
func runServer(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listener = ln
	cfg.Edge = State{Listen: "127.0.0.1:10000", APIs: []string{"127.0.0.1:8080"}}
	cfg.Logger = slog.New(slog.DiscardHandler)
	s, err := New(cfg)
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	runtest.Start(t, s.Run)
	return s, ln.Addr().String()
}

func clusterNames(t *testing.T, resp *discovery.DiscoveryResponse) []string {
	t.Helper()
	var out []string
	for _, a := range resp.GetResources() {
		var cla endpoint.ClusterLoadAssignment
		if err := a.UnmarshalTo(&cla); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s:%d", cla.GetClusterName(), len(cla.GetEndpoints()[0].GetLbEndpoints())))
	}
	sort.Strings(out)
	return out
}

func TestServerStateOfTheWorld(t *testing.T) {
	s, ctx, ads := startADS(t)
	st, err := ads.StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{ActivatorCluster, "deploy-d1"}
	// recvUntil receives (and ACKs) responses until one has want.
	recvUntil := func(want []string) *discovery.DiscoveryResponse {
		t.Helper()
		var last []string
		for {
			resp, err := st.Recv()
			if err != nil {
				t.Fatalf("waiting for %v (last %v): %v", want, last, err)
			}
			if last = clusterNames(t, resp); cmp.Equal(want, last) {
				return resp
			}
			if err := st.Send(&discovery.DiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNames: names,
				ResponseNonce: resp.GetNonce(), VersionInfo: resp.GetVersionInfo()}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := st.Send(&discovery.DiscoveryRequest{Node: &core.Node{Id: "edge-1"}, TypeUrl: resource.EndpointType, ResourceNames: names}); err != nil {
		t.Fatal(err)
	}
	s.SetEndpoints("d1", 2, map[string]string{"i1": "127.0.0.1:9001"})
	resp := recvUntil([]string{"deploy-d1:1", "thaw-activator:1"})
	if err := s.WaitForNode(ctx, "edge-1"); err != nil {
		t.Fatal(err)
	}

	// Envoy rejects it: counted, and the next change still goes out.
	if err := st.Send(&discovery.DiscoveryRequest{
		TypeUrl: resource.EndpointType, ResourceNames: names, ResponseNonce: resp.GetNonce(),
		ErrorDetail: &status.Status{Code: 3, Message: "malformed IP address: nope"},
	}); err != nil {
		t.Fatal(err)
	}
	s.SetEndpoints("d1", 2, map[string]string{"i1": "127.0.0.1:9001", "i2": "127.0.0.1:9002"})
	resp2 := recvUntil([]string{"deploy-d1:2", "thaw-activator:1"})
	// Version is recorded just after the push.
	waitUntil(t, "the server to record the pushed version", func() bool { return s.Version(resource.EndpointType) == resp2.GetVersionInfo() })
	if resp2.GetVersionInfo() == resp.GetVersionInfo() || resp2.GetVersionInfo() != s.Version(resource.EndpointType) {
		t.Errorf("versions: first %q, second %q, server %q", resp.GetVersionInfo(), resp2.GetVersionInfo(), s.Version(resource.EndpointType))
	}
	if n := s.NACKs(); n != 1 {
		t.Errorf("NACKs = %d, want 1", n)
	}
}

func TestServerDelta(t *testing.T) {
	s, ctx, ads := startADS(t)
	st, err := ads.DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discovery.DeltaDiscoveryRequest{Node: &core.Node{Id: "edge-d"}, TypeUrl: resource.ClusterType, ResourceNamesSubscribe: []string{"*"}}); err != nil {
		t.Fatal(err)
	}
	resp, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range resp.GetResources() {
		got = append(got, r.GetName())
	}
	sort.Strings(got)
	if diff := cmp.Diff([]string{ActivatorCluster, APICluster}, got); diff != "" {
		t.Errorf("clusters (-want +got):\n%s", diff)
	}
	// ACK, then a change arrives as a delta.
	if err := st.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType, ResponseNonce: resp.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	s.SetEndpoints("d1", 1, nil)
	resp, err = st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetResources()) != 1 || resp.GetResources()[0].GetName() != "deploy-d1" {
		t.Errorf("delta after adding d1: %v", resp.GetResources())
	}
	if err := st.Send(&discovery.DeltaDiscoveryRequest{
		TypeUrl: resource.ClusterType, ResponseNonce: resp.GetNonce(),
		ErrorDetail: &status.Status{Code: 3, Message: "rejected"},
	}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the NACK to be counted", func() bool { return s.NACKs() >= 1 })
	if n := s.NACKs(); n != 1 {
		t.Errorf("NACKs = %d, want 1", n)
	}
}

// waitUntil polls cond until it holds, failing the test after 5 seconds. The
// server is reached over real gRPC and HTTP sockets, which a synctest bubble
// cannot hold, so it waits in real time, on a condition.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 5s waiting for %s", what)
		}
		<-tick.C
	}
}

// fakeAdmin serves Envoy's /clusters with rq_active for one host.
type fakeAdmin struct {
	mu       sync.Mutex // mu guards active, draining and served.
	active   int
	draining bool
	served   int // requests answered
}

func (f *fakeAdmin) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.served++
	flags := "healthy"
	if f.draining {
		flags = "/eds_status_draining"
	}
	fmt.Fprintf(w, "deploy-d1::127.0.0.1:9001::rq_active::%d\ndeploy-d1::127.0.0.1:9001::health_flags::%s\n", f.active, flags)
}

// serve answers /clusters from f at a URL that closes with the test.
func (f *fakeAdmin) serve(t *testing.T) string {
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return srv.URL
}

func (f *fakeAdmin) set(active int, draining bool) {
	f.mu.Lock()
	f.active, f.draining = active, draining
	f.mu.Unlock()
}

func (f *fakeAdmin) polls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.served
}

// notDrained checks that ch stays open once the only drain poller has
// judged fa's current state: every answer after the current count reflects
// the last set, and the poller asks again only after judging an answer, so
// two more answers mean one was judged not idle. Waiting on polls, not a
// fixed time, keeps the check from passing merely because it looked early.
func notDrained(t *testing.T, fa *fakeAdmin, ch <-chan struct{}, msg string) {
	t.Helper()
	n := fa.polls()
	waitUntil(t, "the drain poller to judge the state twice", func() bool {
		select {
		case <-ch:
			return true
		default:
			return fa.polls() >= n+2
		}
	})
	select {
	case <-ch:
		t.Fatal(msg)
	default:
	}
}

func TestServerDrained(t *testing.T) {
	fa := &fakeAdmin{active: 2}
	s, _ := startServer(t, fa.serve(t))
	s.SetEndpoints("d1", 1, map[string]string{"i1": "127.0.0.1:9001"})
	s.SetEndpoints("d1", 1, nil) // scale-down: i1 leaves load balancing
	if diff := cmp.Diff([]Endpoint{{ID: "i1", Addr: "127.0.0.1:9001", Draining: true}}, s.endpointsOf("d1")); diff != "" {
		t.Errorf("while draining (-want +got):\n%s", diff)
	}
	ch := s.Drained("d1", "i1")
	for _, step := range []struct {
		active   int
		draining bool
	}{{2, false}, {2, true}, {0, false}} {
		fa.set(step.active, step.draining)
		notDrained(t, fa, ch, fmt.Sprintf("drained with %d in flight, draining=%v", step.active, step.draining))
	}
	fa.set(0, true)
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("not drained with nothing in flight")
	}
	if got := s.endpointsOf("d1"); len(got) != 0 {
		t.Errorf("after drain: %v", got)
	}

	// Unknown instance, or no admin to ask: closed before Drained returns.
	select {
	case <-s.Drained("d1", "nope"):
	default:
		t.Fatal("unknown instance not drained at once")
	}
}

func (s *Server) endpointsOf(id string) []Endpoint {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d, ok := s.deployments[id]; ok {
		return append([]Endpoint(nil), d.Endpoints...)
	}
	return nil
}

func waitEndpoints(t *testing.T, s *Server, id string, want []Endpoint) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cmp.Equal(want, s.endpointsOf(id)) && time.Now().Before(deadline) {
		<-tick.C
	}
	if diff := cmp.Diff(want, s.endpointsOf(id)); diff != "" {
		t.Errorf("endpoints of %s (-want +got):\n%s", id, diff)
	}
}

// The fleet may ask Drained before it takes the instance out.
func TestServerDrainedBeforeRemoval(t *testing.T) {
	fa := &fakeAdmin{active: 1}
	s, _ := startServer(t, fa.serve(t))
	s.SetEndpoints("d1", 1, map[string]string{"i1": "127.0.0.1:9001"})
	ch := s.Drained("d1", "i1")
	s.SetEndpoints("d1", 1, nil)
	waitEndpoints(t, s, "d1", []Endpoint{{ID: "i1", Addr: "127.0.0.1:9001", Draining: true}})
	fa.set(0, true)
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("not drained")
	}
	waitEndpoints(t, s, "d1", nil)
}

// An instance that left without anyone draining it (it failed) leaves EDS
// after DrainGrace; one that a Drained call waits for stays.
func TestServerDrainGrace(t *testing.T) {
	fa := &fakeAdmin{active: 1, draining: true}
	s, _ := startServerGrace(t, 50*time.Millisecond, fa.serve(t))
	s.SetEndpoints("d1", 1, map[string]string{"i1": "127.0.0.1:9001", "i2": "127.0.0.1:9002"})
	ch := s.Drained("d1", "i1") // i1 is scaled down; i2 just vanishes
	s.SetEndpoints("d1", 1, nil)
	waitEndpoints(t, s, "d1", []Endpoint{{ID: "i1", Addr: "127.0.0.1:9001", Draining: true}})
	// i2 is gone, so DrainGrace has passed: i1 stays, being waited for.
	notDrained(t, fa, ch, "drained with a request in flight")
	fa.set(0, true)
	<-ch
	waitEndpoints(t, s, "d1", nil)
}
