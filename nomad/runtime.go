package nomad

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/thawhq/thaw/fleet"
	"github.com/thawhq/thaw/jobs"
)

// Defaults of Config.
const (
	DefaultAdoptGrace     = time.Minute
	DefaultResyncInterval = 30 * time.Second
)

// eventBuffer is the size of the Events channel.
const eventBuffer = 256

// ErrNotReady is returned by Start until Run has read the jobs already in
// Nomad (so a restarted thaw adopts running allocations instead of
// starting duplicates). The fleet retries; it lasts while Nomad is
// unreachable at start.
var ErrNotReady = errors.New("nomad: runtime not ready: reading thaw's jobs from Nomad")

// Config configures a Runtime.
type Config struct {
	// Client talks to Nomad (address, token, namespace, region). Required.
	Client *api.Client
	// Renderer renders the jobs. Required.
	Renderer *jobs.Renderer
	// Engine is the model server the jobs run. Default jobs.EngineVLLM.
	Engine jobs.Engine
	// ThawBinary is the thaw executable on the Nomad clients, for
	// jobs.EngineSim. Default os.Executable() (right for one machine).
	ThawBinary string
	// SimStartup and SimTokensPerSecond tune the simulator (EngineSim);
	// zero means its defaults.
	SimStartup         time.Duration
	SimTokensPerSecond float64
	// AdoptGrace is how long instances found running in Nomad at start
	// wait to be claimed by a Start before they are stopped. Default
	// DefaultAdoptGrace.
	AdoptGrace time.Duration
	// ResyncInterval is how often the runtime lists its jobs' allocations
	// and evaluations, in case the event stream missed something. Default
	// DefaultResyncInterval.
	ResyncInterval time.Duration
	// RetryInterval is the longest wait between retries of a Nomad write
	// that failed. Default 10s.
	RetryInterval time.Duration
	// Logger receives the runtime's logs. Default slog.Default().
	Logger *slog.Logger
}

// Runtime runs thaw instances as Nomad allocations; it implements
// fleet.Runtime. See doc.go for the mapping. Start, Stop and Purge are safe
// for concurrent use; Nomad is written to only while Run runs.
type Runtime struct {
	cfg    Config
	nc     *api.Client
	log    *slog.Logger
	events *fleet.EventQueue
	kick   chan struct{} // capacity 1: "a deployment may be dirty"

	// applyMu serialises writes to Nomad (sync and Purge), so a purged job
	// is never registered again by a sync that was in flight.
	applyMu sync.Mutex

	// mu guards the fields below and every deploymentJob and slot.
	mu          sync.Mutex
	deployments map[string]*deploymentJob
	ready       bool      // adoption done: Start may proceed
	adoptUntil  time.Time // unclaimed orphans are stopped after it
	runCtx      context.Context
	syncErr     error // last failed Nomad write, nil once one succeeds
	watchErr    error // event stream failure, nil while connected
}

// deploymentJob is one deployment's job as the runtime wants it.
type deploymentJob struct {
	id      string
	spec    fleet.Spec
	hasSpec bool
	base    *api.Job // the job read from Nomad at adoption
	slots   []*slot  // in start order: the job's task groups
	// dirty: slots changed since the last successful write; gen counts
	// changes, so a write of an older state does not clear dirty.
	dirty      bool
	gen        uint64
	registered bool // the job runs in Nomad (as far as we know)
	retryAt    time.Time
	failures   int
	token      string // HF token last written to the Variable
}

// slot is one instance: a task group of count 1 named group.
type slot struct {
	id, group string
	tg        *api.TaskGroup
	orphan    bool // found in Nomad at start, not claimed by a Start yet
	removing  bool // Stop asked: the group leaves the job
	alloc     string
	allocIdx  uint64 // ModifyIndex of the last allocation view applied
	// allocCreate is the bound allocation's CreateIndex: a newer live
	// allocation in the group is Nomad's replacement of it.
	allocCreate uint64
	evalIdx     uint64 // ModifyIndex of the last failed evaluation applied
	// held is the bound allocation's placement (Nomad's CreateTime): when
	// it took the GPUs; released is when it freed them (terminal: its
	// tasks' last FinishedAt). Zero while unknown.
	held, released time.Time
	// Last state, as reported to the fleet (orphans: not reported yet).
	phase        fleet.Phase
	addr, reason string
	done         chan struct{} // closed when the slot is over
}

// New returns a Runtime; Run starts it.
func New(cfg Config) (*Runtime, error) {
	if cfg.Client == nil || cfg.Renderer == nil {
		return nil, errors.New("nomad: Client and Renderer are required")
	}
	if cfg.Engine == "" {
		cfg.Engine = jobs.EngineVLLM
	}
	if cfg.Engine == jobs.EngineSim && cfg.ThawBinary == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("nomad: thaw binary for the simulator: %w", err)
		}
		cfg.ThawBinary = exe
	}
	if cfg.AdoptGrace <= 0 {
		cfg.AdoptGrace = DefaultAdoptGrace
	}
	if cfg.ResyncInterval <= 0 {
		cfg.ResyncInterval = DefaultResyncInterval
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Runtime{
		cfg: cfg, nc: cfg.Client, log: cfg.Logger,
		events: fleet.NewEventQueue(eventBuffer), kick: make(chan struct{}, 1),
		deployments: map[string]*deploymentJob{},
	}, nil
}

// Events delivers instance reports; see fleet.Runtime.
func (r *Runtime) Events() <-chan fleet.Instance { return r.events.Events() }

// Err returns why Nomad cannot be reached or refuses thaw's writes, nil
// when the last write succeeded and the event stream is connected.
func (r *Runtime) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return errors.Join(r.syncErr, r.watchErr)
}

// Start asks for one more instance of spec: a new task group in the
// deployment's job, registered in the background. After a restart it first
// hands out the instances found running in Nomad.
func (r *Runtime) Start(_ context.Context, spec fleet.Spec) (string, error) {
	group := "i-" + randHex(4)
	tg, err := r.group(spec, group)
	if err != nil {
		return "", err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.ready {
		return "", ErrNotReady
	}
	d := r.deploymentLocked(spec.DeployID)
	d.spec, d.hasSpec = spec, true
	if s := d.claimLocked(); s != nil {
		s.orphan = false
		r.log.Info("adopted an instance running in Nomad", "deploy", d.id, "instance", s.id, "alloc", s.alloc, "phase", s.phase)
		if s.phase != "" {
			r.pushLocked(d, s)
		}
		return s.id, nil
	}
	s := &slot{id: d.id + "/" + group, group: group, tg: tg, done: make(chan struct{})}
	d.slots = append(d.slots, s)
	r.touchLocked(d)
	return s.id, nil
}

// Stop removes the instance's task group from the job and returns once
// Nomad reports its allocation over (GPUs free) or it never had one. After
// Run's context is done, Stop does nothing: allocations outlive a thaw
// restart and the next Run adopts them.
func (r *Runtime) Stop(ctx context.Context, id string) error {
	deploymentID, _, _ := strings.Cut(id, "/")
	r.mu.Lock()
	if r.runCtx != nil && r.runCtx.Err() != nil {
		r.mu.Unlock()
		return nil
	}
	d := r.deployments[deploymentID]
	var s *slot
	if d != nil {
		s = d.slotLocked(func(s *slot) bool { return s.id == id })
	}
	if s == nil {
		r.mu.Unlock()
		return nil
	}
	if !s.removing {
		s.removing = true
		r.touchLocked(d)
	}
	done := s.done
	r.mu.Unlock()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("nomad: stop %s: waiting for its allocation to end: %w", id, ctx.Err())
	}
}

// group renders one instance's task group.
func (r *Runtime) group(spec fleet.Spec, name string) (*api.TaskGroup, error) {
	job, err := r.render(spec)
	if err != nil {
		return nil, err
	}
	tg := job.TaskGroups[0]
	tg.Name = &name
	// thaw replaces failed instances itself (the fleet counts crash loops),
	// so Nomad must not: a failed allocation stays failed.
	tg.ReschedulePolicy = &api.ReschedulePolicy{Attempts: new(0), Unlimited: new(false)}
	return tg, nil
}

func (r *Runtime) render(spec fleet.Spec) (*api.Job, error) {
	job, err := r.cfg.Renderer.Job(jobs.Spec{
		DeployID: spec.DeployID, Owner: spec.Owner, Model: spec.Model,
		GPU: spec.GPU, NumGPUs: spec.NumGPUs, MaxBatchSize: spec.MaxBatchSize,
		HFRepo: spec.Repo, HFRevision: spec.Revision, ExtraArgs: spec.ExtraArgs,
		Count: 1, Engine: r.cfg.Engine, ThawBinary: r.cfg.ThawBinary,
		SimStartup: r.cfg.SimStartup, SimTokensPerSecond: r.cfg.SimTokensPerSecond,
	})
	if err != nil {
		return nil, fmt.Errorf("nomad: render job of %s: %w", spec.DeployID, err)
	}
	return job, nil
}

// deploymentLocked returns the deployment's state, creating it. Called with mu held.
func (r *Runtime) deploymentLocked(id string) *deploymentJob {
	d := r.deployments[id]
	if d == nil {
		d = &deploymentJob{id: id}
		r.deployments[id] = d
	}
	return d
}

// touchLocked marks d for the syncer. Called with mu held.
func (r *Runtime) touchLocked(d *deploymentJob) {
	d.dirty = true
	d.gen++
	d.retryAt = time.Time{}
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// setLocked records a slot's new state and reports it when it changed.
// Called with mu held.
func (r *Runtime) setLocked(d *deploymentJob, s *slot, phase fleet.Phase, addr, reason string) {
	if s.phase == phase && s.addr == addr && s.reason == reason {
		return
	}
	s.phase, s.addr, s.reason = phase, addr, reason
	r.pushLocked(d, s)
}

// finishLocked ends a slot: it leaves the job (at the next sync), Stop
// returns, and the fleet hears phase. Called with mu held.
func (r *Runtime) finishLocked(d *deploymentJob, s *slot, phase fleet.Phase, reason string) {
	i := slices.Index(d.slots, s)
	if i < 0 {
		return
	}
	d.slots = slices.Delete(d.slots, i, i+1)
	close(s.done)
	s.phase, s.addr, s.reason = phase, "", reason
	r.pushLocked(d, s)
	if !s.removing {
		r.touchLocked(d) // the failed group must leave the job
	}
}

// pushLocked reports s to the fleet. Every report from PhaseRunning on
// carries the allocation's placement time as Held (an adopted allocation's
// too: it comes from Nomad, not from this run), and the end reports carry
// Released when the allocation's end is known. Called with mu held.
func (r *Runtime) pushLocked(d *deploymentJob, s *slot) {
	if s.orphan {
		return
	}
	inst := fleet.Instance{ID: s.id, DeployID: d.id, Phase: s.phase, Addr: s.addr, Reason: s.reason}
	switch s.phase {
	case fleet.PhaseRunning:
		inst.Held = s.held
	case fleet.PhaseFailed, fleet.PhaseStopped:
		inst.Held, inst.Released = s.held, s.released
	}
	r.events.Push(inst)
}

// claimLocked picks an orphan for a Start: running first, then placed,
// then unplaced. Called with mu held.
func (d *deploymentJob) claimLocked() *slot {
	for _, ok := range []func(*slot) bool{
		func(s *slot) bool { return s.phase == fleet.PhaseRunning },
		func(s *slot) bool { return s.alloc != "" },
		func(*slot) bool { return true },
	} {
		if s := d.slotLocked(func(s *slot) bool { return s.orphan && !s.removing && ok(s) }); s != nil {
			return s
		}
	}
	return nil
}

func (d *deploymentJob) slotLocked(match func(*slot) bool) *slot {
	for _, s := range d.slots {
		if match(s) {
			return s
		}
	}
	return nil
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
