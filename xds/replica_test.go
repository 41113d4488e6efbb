package xds

import (
	"context"
	"encoding/hex"
	"io"
	"log/slog"
	"math/rand/v2"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
)

var xdsTypes = []resource.Type{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType}

// snapshotView is everything Envoy can be sent from a snapshot: each type's
// version (state of the world), each resource's version (delta xDS) and
// each resource's bytes.
type snapshotView struct {
	Versions         map[string]string
	ResourceVersions map[string]map[string]string
	Bytes            map[string]map[string]string
}

func viewSnapshot(t *testing.T, snap *cache.Snapshot) snapshotView {
	t.Helper()
	if err := snap.ConstructVersionMap(); err != nil {
		t.Fatal(err)
	}
	v := snapshotView{Versions: map[string]string{}, ResourceVersions: map[string]map[string]string{}, Bytes: map[string]map[string]string{}}
	for _, typ := range xdsTypes {
		v.Versions[typ] = snap.GetVersion(typ)
		v.ResourceVersions[typ] = snap.GetVersionMap(typ)
		v.Bytes[typ] = map[string]string{}
		for name, r := range snap.GetResources(typ) {
			b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			v.Bytes[typ][name] = hex.EncodeToString(b)
		}
	}
	return v
}

// shuffled is st with its deployments, their endpoints, the API replicas
// and the activators in a random order, and some addresses repeated, as
// another replica may have learnt or been given them.
func shuffled(st State, r *rand.Rand) State {
	st.APIs = shuffledAddrs(st.APIs, r)
	st.Activators = shuffledAddrs(st.Activators, r)
	st.Deployments = append([]Deployment(nil), st.Deployments...)
	r.Shuffle(len(st.Deployments), func(i, j int) { st.Deployments[i], st.Deployments[j] = st.Deployments[j], st.Deployments[i] })
	for i, d := range st.Deployments {
		eps := append([]Endpoint(nil), d.Endpoints...)
		r.Shuffle(len(eps), func(i, j int) { eps[i], eps[j] = eps[j], eps[i] })
		st.Deployments[i].Endpoints = eps
	}
	return st
}

// shuffledAddrs is addrs with one of them repeated, in a random order.
func shuffledAddrs(addrs []string, r *rand.Rand) []string {
	out := append([]string(nil), addrs...)
	if len(addrs) > 0 {
		out = append(out, addrs[r.IntN(len(addrs))])
	}
	r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// TestBuildIdenticalAcrossReplicas: the same state in any order builds
// byte-identical snapshots with the same versions, so an Envoy that moves
// from one xDS replica to another is re-sent exactly what it has.
func TestBuildIdenticalAcrossReplicas(t *testing.T) {
	st := testState()
	st.APIs = []string{"127.0.0.1:8090", "10.0.0.2:8080", "127.0.0.1:8080"}
	st.Activators = []string{"127.0.0.1:8083", "127.0.0.1:8081", "127.0.0.1:8082"}
	st.Deployments = append(st.Deployments,
		Deployment{ID: "many", Model: "carol/m", Capacity: 8, Endpoints: []Endpoint{
			{ID: "i9", Addr: "127.0.0.1:9009"}, {ID: "i7", Addr: "127.0.0.1:9007"}, {ID: "i8", Addr: "127.0.0.1:9008"},
		}})
	first, err := Build(st)
	if err != nil {
		t.Fatal(err)
	}
	want := viewSnapshot(t, first)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 20 {
		snap, err := Build(shuffled(st, r))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, viewSnapshot(t, snap)); diff != "" {
			t.Fatalf("build %d differs from the first (-want +got):\n%s", i, diff)
		}
	}
	// The view sees a change: a version that stayed put on a real change
	// would leave Envoy on the old configuration.
	st.Deployments[0].Endpoints = st.Deployments[0].Endpoints[1:]
	changed, err := Build(st)
	if err != nil {
		t.Fatal(err)
	}
	got := viewSnapshot(t, changed)
	if got.Versions[resource.EndpointType] == want.Versions[resource.EndpointType] || got.Versions[resource.ListenerType] != want.Versions[resource.ListenerType] {
		t.Errorf("one endpoint fewer: versions %v, before %v; want only the endpoints' changed", got.Versions, want.Versions)
	}
}

// replicaEvent is one call the fleet makes on a Server.
type replicaEvent func(*Server)

// TestServersIdenticalAcrossReplicas: two Servers, as two thaw server
// replicas, that learn the same deployments and endpoints in different
// orders and through different histories push identical snapshots.
func TestServersIdenticalAcrossReplicas(t *testing.T) {
	// Each replica is given the replicas' addresses in its own order, as
	// operators write flags.
	newServer := func(apis, activators []string) *Server {
		s, err := New(Config{Addr: "127.0.0.1:0", Edge: State{
			Listen: "127.0.0.1:10000", APIs: apis, Activators: activators,
		}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	events := []replicaEvent{
		func(s *Server) { s.SetModel("d-a", "alice/a") },
		func(s *Server) {
			s.SetEndpoints("d-a", 4, map[string]string{"i1": "127.0.0.1:9001", "i2": "127.0.0.1:9002", "i3": "127.0.0.1:9003"})
		},
		func(s *Server) { s.SetModel("d-b", "bob/b") },
		func(s *Server) { s.SetEndpoints("d-b", 1, map[string]string{"i4": "127.0.0.1:9004"}) },
		func(s *Server) { s.SetModel("d-c", "carol/c") },
		func(s *Server) { s.Fail("d-c", "crash loop") },
	}
	a := newServer([]string{"127.0.0.1:8080", "127.0.0.1:8090"}, []string{"127.0.0.1:8081", "127.0.0.1:8082"})
	b := newServer([]string{"127.0.0.1:8090", "127.0.0.1:8080"}, []string{"127.0.0.1:8082", "127.0.0.1:8081"})
	for _, e := range events {
		e(a)
	}
	// b: the reverse order, after a deployment since removed and an
	// instance since gone (no Envoy admin: it leaves EDS at once).
	b.SetModel("d-gone", "alice/gone")
	b.SetEndpoints("d-gone", 1, map[string]string{"i0": "127.0.0.1:9000"})
	b.SetEndpoints("d-a", 4, map[string]string{"i5": "127.0.0.1:9005"})
	for i := len(events) - 1; i >= 0; i-- {
		events[i](b)
	}
	b.Remove("d-gone")

	views := map[string]snapshotView{}
	for name, s := range map[string]*Server{"a": a, "b": b} {
		if err := s.rebuild(context.Background()); err != nil {
			t.Fatal(err)
		}
		snap, err := s.cache.GetSnapshot(nodeKey)
		if err != nil {
			t.Fatal(err)
		}
		views[name] = viewSnapshot(t, snap.(*cache.Snapshot))
		if got := len(views[name].Bytes[resource.ClusterType]); got != 5 {
			t.Errorf("replica %s: %d clusters, want 5 (api, activator, 3 deployments)", name, got)
		}
	}
	if diff := cmp.Diff(views["a"], views["b"]); diff != "" {
		t.Errorf("replicas' snapshots differ (-a +b):\n%s", diff)
	}
	for _, typ := range xdsTypes {
		if a.Version(typ) != b.Version(typ) || a.Version(typ) == "" {
			t.Errorf("%s: Version a %q, b %q; want equal", typ, a.Version(typ), b.Version(typ))
		}
	}
}
