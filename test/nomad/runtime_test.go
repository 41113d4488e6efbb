package nomadtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/thawhq/thaw/fleet"
	"github.com/thawhq/thaw/jobs"
	"github.com/thawhq/thaw/nomad"
)

// rtHarness runs one nomad.Runtime against the test agent and records its
// reports.
type rtHarness struct {
	t      *testing.T
	rt     *nomad.Runtime
	cancel context.CancelFunc
	done   chan struct{}
	reader sync.WaitGroup

	mu   sync.Mutex
	last map[string]fleet.Instance // instance id -> latest report
}

type rtOpts struct {
	thawBinary string        // default the test's thaw
	adoptGrace time.Duration // default 1m
}

func startRuntime(t *testing.T, o rtOpts) *rtHarness {
	t.Helper()
	needCluster(t)
	if o.thawBinary == "" {
		o.thawBinary = thawBin
	}
	r, err := jobs.New(jobs.Config{})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	rt, err := nomad.New(nomad.Config{
		Client: nomadClient(), Renderer: r, Engine: jobs.EngineSim,
		ThawBinary: o.thawBinary, SimStartup: 200 * time.Millisecond,
		AdoptGrace: o.adoptGrace, ResyncInterval: 5 * time.Second, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &rtHarness{t: t, rt: rt, cancel: cancel, done: make(chan struct{}), last: map[string]fleet.Instance{}}
	go func() {
		defer close(h.done)
		_ = rt.Run(ctx)
	}()
	h.reader.Add(1)
	go func() {
		defer h.reader.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-rt.Events():
				t.Logf("event: %s %s addr=%q reason=%q", ev.ID, ev.Phase, ev.Addr, ev.Reason)
				h.mu.Lock()
				h.last[ev.ID] = ev
				h.mu.Unlock()
			}
		}
	}()
	t.Cleanup(h.close)
	return h
}

// close stops Run (allocations stay in Nomad).
func (h *rtHarness) close() {
	h.cancel()
	select {
	case <-h.done:
	case <-time.After(10 * time.Second):
		h.t.Errorf("runtime Run did not return within 10s of cancel")
	}
	h.reader.Wait()
}

func (h *rtHarness) start(spec fleet.Spec) string {
	h.t.Helper()
	var id string
	var err error
	waitFor(30*time.Second, 100*time.Millisecond, func() bool {
		id, err = h.rt.Start(context.Background(), spec)
		return !errors.Is(err, nomad.ErrNotReady)
	})
	if err != nil {
		h.t.Fatalf("Start %s: %v", spec.DeployID, err)
	}
	return id
}

func (h *rtHarness) stop(id string) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := h.rt.Stop(ctx, id); err != nil {
		h.t.Fatalf("Stop %s: %v", id, err)
	}
}

func (h *rtHarness) report(id string) fleet.Instance {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last[id]
}

// waitReport waits until the latest report of id satisfies cond.
func (h *rtHarness) waitReport(id string, timeout time.Duration, what string, cond func(fleet.Instance) bool) fleet.Instance {
	h.t.Helper()
	if !waitFor(timeout, 50*time.Millisecond, func() bool { return cond(h.report(id)) }) {
		h.t.Fatalf("instance %s: not %s within %v; last report: %+v", id, what, timeout, h.report(id))
	}
	return h.report(id)
}

func (h *rtHarness) waitRunning(id string) fleet.Instance {
	h.t.Helper()
	in := h.waitReport(id, 60*time.Second, "running", func(in fleet.Instance) bool { return in.Phase == fleet.PhaseRunning })
	h.waitServing(in.Addr)
	return in
}

// waitServing waits until the simulator at addr answers /health.
func (h *rtHarness) waitServing(addr string) {
	h.t.Helper()
	var last error
	ok := waitFor(30*time.Second, 100*time.Millisecond, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		code, err := httpGet(ctx, "http://"+addr+"/health")
		last = fmt.Errorf("status %d, err %v", code, err)
		return err == nil && code == 200
	})
	if !ok {
		h.t.Fatalf("model server at %s not answering /health: %v", addr, last)
	}
}

func newSpec(gpu string, numGPUs int) fleet.Spec {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	id := "t-" + hex.EncodeToString(b)
	return fleet.Spec{
		DeployID: id, Owner: "dev", Model: "dev/" + id, GPU: gpu, NumGPUs: numGPUs,
		MaxBatchSize: 4, Repo: "org/model",
	}
}

// spec is newSpec for a deployment the runtime purges from Nomad when the
// test ends.
func (h *rtHarness) spec(gpu string, numGPUs int) fleet.Spec {
	spec := newSpec(gpu, numGPUs)
	h.t.Cleanup(func() { _ = h.rt.Purge(context.Background(), spec.DeployID) })
	return spec
}

// liveAllocs returns the job's allocations Nomad wants running, by ID.
func liveAllocs(t *testing.T, deployID string) map[string]*api.AllocationListStub {
	t.Helper()
	stubs, _, err := nomadClient().Jobs().Allocations(jobs.JobID(deployID), true, nil)
	if err != nil {
		t.Fatalf("list allocations: %v", err)
	}
	out := map[string]*api.AllocationListStub{}
	for _, s := range stubs {
		if s.DesiredStatus == "run" && (s.ClientStatus == "running" || s.ClientStatus == "pending") {
			out[s.ID] = s
		}
	}
	return out
}

func waitLiveAllocs(t *testing.T, deployID string, n int) map[string]*api.AllocationListStub {
	t.Helper()
	var got map[string]*api.AllocationListStub
	if !waitFor(30*time.Second, 100*time.Millisecond, func() bool {
		got = liveAllocs(t, deployID)
		return len(got) == n
	}) {
		t.Fatalf("job %s: %d live allocations, want %d", jobs.JobID(deployID), len(got), n)
	}
	return got
}

// testWriter sends logs to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

var _ io.Writer = testWriter{}

// jobString is the job as Nomad returns it, for searching.
func jobString(j *api.Job) string {
	b, _ := json.Marshal(j)
	return string(b)
}
