package fleet

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/internal/bubbletest"
	"github.com/thawhq/thaw/internal/runtest"
)

// recorder is an ordered log of what a fake or a callback saw, safe for
// concurrent use.
type recorder[T any] struct {
	mu      sync.Mutex // mu guards entries.
	entries []T
}

func (r *recorder[T]) add(v T) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.entries = append(r.entries, v)
}

func (r *recorder[T]) all() []T {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.entries)
}

// journal is a log of what the fakes saw, in order, shared by the fake
// runtime and the fake endpoints so tests can check ordering across them.
type journal struct{ recorder[string] }

func (j *journal) addf(format string, args ...any) { j.add(fmt.Sprintf(format, args...)) }

// index returns the position of the first entry equal to s, or -1.
func (j *journal) index(s string) int { return slices.Index(j.all(), s) }

// fakeRuntime hands out instance IDs i1, i2, ... and lets the test emit
// events.
type fakeRuntime struct {
	j      *journal
	events chan Instance

	mu     sync.Mutex // mu guards specs and stops.
	specs  map[string]Spec
	order  []string
	stops  []string
	nextID int
}

func (r *fakeRuntime) Start(_ context.Context, spec Spec) (string, error) {
	r.mu.Lock()
	r.nextID++
	id := fmt.Sprintf("i%d", r.nextID)
	r.specs[id] = spec
	r.order = append(r.order, id)
	r.mu.Unlock()
	r.j.addf("start %s %s", spec.DeployID, id)
	return id, nil
}

func (r *fakeRuntime) Stop(_ context.Context, id string) error {
	r.mu.Lock()
	r.stops = append(r.stops, id)
	r.mu.Unlock()
	r.j.addf("stop %s", id)
	return nil
}

func (r *fakeRuntime) Events() <-chan Instance { return r.events }

func (r *fakeRuntime) started() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.order)
}

// startedFor lists the instances started for deployment id.
func (r *fakeRuntime) startedFor(id string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, i := range r.order {
		if r.specs[i].DeployID == id {
			out = append(out, i)
		}
	}
	return out
}

func (r *fakeRuntime) stopped() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := slices.Clone(r.stops)
	slices.Sort(out)
	return slices.Compact(out)
}

func (r *fakeRuntime) emit(ev Instance) { r.events <- ev }

// fakeStore serves a settable list of deployments.
type fakeStore struct {
	mu          sync.Mutex // mu guards deployments.
	deployments []deploy.Deployment
	changed     chan struct{}
}

func (s *fakeStore) List(owner string) []deploy.Deployment {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []deploy.Deployment
	for _, d := range s.deployments {
		if owner == "" || d.Owner == owner {
			out = append(out, d)
		}
	}
	return out
}

func (s *fakeStore) Changed() <-chan struct{} { return s.changed }

func (s *fakeStore) set(deployments ...deploy.Deployment) {
	s.mu.Lock()
	s.deployments = deployments
	s.mu.Unlock()
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// fakeEndpoints records what the fleet tells the request path.
type fakeEndpoints struct {
	j *journal

	mu       sync.Mutex // mu guards the fields below.
	sets     map[string]map[string]string
	capacity map[string]int
	drained  map[string]chan struct{}
	failed   map[string]string
	recov    []string
	removed  []string
}

func (e *fakeEndpoints) SetEndpoints(deployID string, capacity int, addrs map[string]string) {
	ids := make([]string, 0, len(addrs))
	for id := range addrs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	e.mu.Lock()
	e.sets[deployID] = addrs
	e.capacity[deployID] = capacity
	e.mu.Unlock()
	e.j.addf("set %s [%s]", deployID, strings.Join(ids, " "))
}

func (e *fakeEndpoints) drainCh(id string) chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	c, ok := e.drained[id]
	if !ok {
		c = make(chan struct{})
		e.drained[id] = c
	}
	return c
}

func (e *fakeEndpoints) Drained(_, instanceID string) <-chan struct{} { return e.drainCh(instanceID) }

// drain closes instanceID's Drained channel.
func (e *fakeEndpoints) drain(instanceID string) { close(e.drainCh(instanceID)) }

func (e *fakeEndpoints) Fail(deployID, reason string) {
	e.mu.Lock()
	e.failed[deployID] = reason
	e.mu.Unlock()
	e.j.addf("fail %s", deployID)
}

func (e *fakeEndpoints) Recover(deployID string) {
	e.mu.Lock()
	e.recov = append(e.recov, deployID)
	e.mu.Unlock()
	e.j.addf("recover %s", deployID)
}

func (e *fakeEndpoints) Remove(deployID string) {
	e.mu.Lock()
	e.removed = append(e.removed, deployID)
	e.mu.Unlock()
	e.j.addf("remove %s", deployID)
}

// failure returns the reason Fail was last given for deployID, if any.
func (e *fakeEndpoints) failure(deployID string) (string, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	reason, ok := e.failed[deployID]
	return reason, ok
}

// recovered lists the deployments Recover was called for, in order.
func (e *fakeEndpoints) recovered() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.recov)
}

// removedIDs lists the deployments Remove was called for, in order.
func (e *fakeEndpoints) removedIDs() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.removed)
}

// routed returns the deployment's current endpoint set.
func (e *fakeEndpoints) routed(deployID string) map[string]string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.sets[deployID]
}

// modelServer is a fake model server answering /health and /v1/models in
// memory: the fleet's probes reach it through the harness's transport, never
// a socket, so a synctest bubble can wait on them.
type modelServer struct {
	address string
	model   string
	healthy atomic.Bool
	probes  atomic.Int64
}

func (m *modelServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m.probes.Add(1)
	switch r.URL.Path {
	case "/health":
		if !m.healthy.Load() {
			http.Error(w, "loading", http.StatusServiceUnavailable)
		}
	case "/v1/models":
		fmt.Fprintf(w, `{"object":"list","data":[{"id":%q,"object":"model"}]}`, m.model)
	case "/v1/completions":
		fmt.Fprint(w, `{"object":"text_completion","choices":[{"text":"x","finish_reason":"length"}],`+
			`"usage":{"prompt_tokens":2,"total_tokens":3,"completion_tokens":1}}`)
	default:
		http.NotFound(w, r)
	}
}

func (m *modelServer) addr() string { return m.address }

// modelNet routes the fleet's probes to model servers by address, in
// memory. Each request is served on its own goroutine and abandoned when
// its context ends, as over a socket, so the probes' timeouts apply.
type modelNet struct {
	mu      sync.Mutex // mu guards servers.
	servers map[string]http.Handler
}

// add serves h at a fresh address and returns it.
func (n *modelNet) add(h http.Handler) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	addr := fmt.Sprintf("10.0.0.%d:8000", len(n.servers)+1)
	n.servers[addr] = h
	return addr
}

// RoundTrip serves r with the model server at r.URL.Host; an unknown
// address is refused, as a closed port would be.
func (n *modelNet) RoundTrip(r *http.Request) (*http.Response, error) {
	n.mu.Lock()
	m, ok := n.servers[r.URL.Host]
	n.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("dial %s: connection refused", r.URL.Host)
	}
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.ServeHTTP(rec, r)
	}()
	select {
	case <-done:
		return rec.Result(), nil
	case <-r.Context().Done():
		return nil, r.Context().Err()
	}
}

// newModelServer starts a model server serving model, healthy or still
// loading, at a fresh address.
func (h *harness) newModelServer(model string, healthy bool) *modelServer {
	m := &modelServer{model: model}
	m.healthy.Store(healthy)
	m.address = h.models.add(m)
	return m
}

// usageLog records the fleet's Usage facts.
type usageLog struct{ recorder[Usage] }

// of returns the facts about instance id, in order.
func (l *usageLog) of(id string) []Usage {
	var out []Usage
	for _, u := range l.all() {
		if u.InstanceID == id {
			out = append(out, u)
		}
	}
	return out
}

type harness struct {
	t      *testing.T
	f      *Fleet
	rt     *fakeRuntime
	store  *fakeStore
	ep     *fakeEndpoints
	j      *journal
	usage  *usageLog
	events *recorder[Event]
	// models serves the fleet's readiness probes.
	models *modelNet
	// stop ends Run and waits for it; the test's cleanup calls it too.
	stop func()
}

// startFleet runs a Fleet over deployments until the test ends. Call it inside a
// synctest bubble: every fake is in memory, so the test steps fake time and
// synctest.Wait sees the fleet idle.
func startFleet(t *testing.T, cfg Config, deployments ...deploy.Deployment) *harness {
	t.Helper()
	j := &journal{}
	h := &harness{
		t:     t,
		j:     j,
		rt:    &fakeRuntime{j: j, events: make(chan Instance, 64), specs: map[string]Spec{}},
		store: &fakeStore{deployments: deployments, changed: make(chan struct{}, 1)},
		ep: &fakeEndpoints{j: j, sets: map[string]map[string]string{}, capacity: map[string]int{},
			drained: map[string]chan struct{}{}, failed: map[string]string{}},
		models: &modelNet{servers: map[string]http.Handler{}},
		usage:  &usageLog{},
		events: &recorder[Event]{},
	}
	cfg.Runtime, cfg.Store, cfg.Endpoints, cfg.Usage, cfg.Events = h.rt, h.store, h.ep, h.usage.add, h.events.add
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.HTTPClient = &http.Client{Transport: h.models, Timeout: time.Second}
	f, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.f = f
	h.stop = runtest.Start(t, f.Run)
	return h
}

// settle lets d of fake time pass (time.Sleep in a synctest bubble: no
// real sleep), then waits for every goroutine of the bubble to block again.
func settle(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

// live returns the fleet's view of d.
func (h *harness) live(d deploy.Deployment) deploy.Live { return h.f.Live(d) }

// setDesired sets d's desired count once the fleet knows d (a moment after
// it starts).
func (h *harness) setDesired(d deploy.Deployment, n int) {
	h.t.Helper()
	bubbletest.Eventually(h.t, d.ID+" known to the fleet", func() bool {
		return h.f.SetDesired(context.Background(), d.ID, n, "test") == nil
	})
}

// readyInstances sets d's desired count to n and brings its n instances
// to ready; it returns their IDs.
func (h *harness) readyInstances(d deploy.Deployment, n int) []string {
	h.t.Helper()
	h.setDesired(d, n)
	ids := h.waitStarted(d.ID, n)
	ms := h.newModelServer(d.FullName(), true)
	for _, id := range ids {
		h.rt.emit(Instance{ID: id, DeployID: d.ID, Phase: PhaseRunning, Addr: ms.addr()})
	}
	h.waitRouted(d.ID, ids...)
	return ids
}

// waitDraining waits until one of d's ready instances ids leaves load
// balancing (a scale-down) and returns it.
func (h *harness) waitDraining(d deploy.Deployment, ids []string) string {
	h.t.Helper()
	bubbletest.Eventually(h.t, "one instance out of load balancing", func() bool { return len(h.ep.routed(d.ID)) == len(ids)-1 })
	routed := h.ep.routed(d.ID)
	for _, id := range ids {
		if _, ok := routed[id]; !ok {
			return id
		}
	}
	return ""
}

// otherThan returns the first of ids that is not not.
func otherThan(ids []string, not string) string {
	for _, id := range ids {
		if id != not {
			return id
		}
	}
	return ""
}

// waitStarted waits until n instances of deployment id were started and
// returns their IDs.
func (h *harness) waitStarted(id string, n int) []string {
	h.t.Helper()
	bubbletest.Eventually(h.t, fmt.Sprintf("%d instances of %s started", n, id), func() bool { return len(h.rt.startedFor(id)) >= n })
	return h.rt.startedFor(id)
}

// waitRouted waits until the deployment's endpoints are exactly ids.
func (h *harness) waitRouted(deployID string, ids ...string) {
	h.t.Helper()
	want := fmt.Sprintf("%v", slices.Sorted(slices.Values(ids)))
	bubbletest.Eventually(h.t, fmt.Sprintf("%s routed to %s", deployID, want), func() bool {
		r := h.ep.routed(deployID)
		got := make([]string, 0, len(r))
		for id := range r {
			got = append(got, id)
		}
		slices.Sort(got)
		return fmt.Sprintf("%v", got) == want && (len(ids) > 0 || r != nil)
	})
}

var created = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// dep is a deployment of owner/model with the given settings.
func newDeployment(id, owner, model string, numGPUs, min, max int) deploy.Deployment {
	return deploy.Deployment{
		ID: id, Owner: owner, ModelName: model,
		Config: deploy.Config{GPU: "A100-80GB", NumGPUs: numGPUs, MaxBatchSize: 4,
			Weights: deploy.Weights{Repo: "org/" + model, Revision: "main"}, ExtraArgs: deploy.ExtraArgs{"--seed", "1"}},
		Settings:  deploy.Settings{MinInstances: min, MaxInstances: max},
		CreatedAt: created,
		HFToken:   "hf_x",
	}
}
