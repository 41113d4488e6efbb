package fleet

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/thawhq/thaw/deploy"
)

// Store is where the fleet reads deployments from.
type Store interface {
	List(owner string) []deploy.Deployment
	Changed() <-chan struct{}
}

// Endpoints receives the ready instances of each deployment: the activator
// (package proxy), the xDS server and the publisher that activator replicas
// follow implement it.
type Endpoints interface {
	// SetEndpoints replaces the deployment's routable instances (id -> addr).
	// Instances that disappear from the set stop getting new requests.
	SetEndpoints(deployID string, capacity int, addrs map[string]string)
	// Drained returns a channel closed once the instance has no request in
	// flight.
	Drained(deployID, instanceID string) <-chan struct{}
	// Fail makes held and new requests for the deployment fail at once with
	// reason, until SetEndpoints or Recover is called.
	Fail(deployID, reason string)
	// Recover ends Fail.
	Recover(deployID string)
	// Remove forgets the deployment: held requests get "not found".
	Remove(deployID string)
}

// Config configures a Fleet.
type Config struct {
	Runtime   Runtime
	Store     Store
	Endpoints Endpoints
	// GPUQuota is the number of GPUs one user may run at once; 0 = no limit.
	GPUQuota int
	// DrainTimeout bounds how long a scale-down waits for in-flight requests
	// (and streams) on an instance before stopping it. Default 10m.
	DrainTimeout time.Duration
	// ProbeInterval is how often a started instance is probed until it is
	// ready. Default 20ms: readiness is seen within that of the port opening.
	ProbeInterval time.Duration
	// CrashLoopAfter is how many consecutive failures of instances that never
	// became ready mark the deployment failed; a failed deployment starts no
	// more instances until it is updated. Default 3.
	CrashLoopAfter int
	// StartTimeout bounds how long an instance may hold its GPUs (running)
	// without becoming ready: past it the fleet stops the instance, and it
	// counts as a failure toward CrashLoopAfter. Default 30m, sized for
	// large models (hundreds of GB of weights to download and load).
	StartTimeout time.Duration
	// Usage receives the GPU-time facts of every instance (see Usage), in
	// order, on Run's goroutine and without the fleet's lock held. It must
	// not block: the receiver queues the facts, or the fleet's loop
	// stalls. nil: none.
	Usage func(Usage)
	// Events receives the lifecycle events of deployments and instances
	// (see Event), in order, on Run's goroutine and without the fleet's
	// lock held. Like Usage it must not block. nil: none.
	Events func(Event)
	// Desired, when set, is the count a deployment starts with when the
	// fleet first sees it, clamped to [min_instances, max_instances]: a new
	// leader's fleet takes over what the previous leader wanted, so the
	// instances it finds running are adopted rather than stopped, and the
	// request paths keep the previous leader's endpoints until this fleet
	// has its own (no push of none at start). Nil, or false: min_instances.
	Desired func(deployID string) (int, bool)
	// HTTPClient probes instances. Default: a client with a 1s timeout.
	HTTPClient *http.Client
	Logger     *slog.Logger
}

// Fleet turns deployments and desired counts into runtime instances: it
// applies GPU quotas, probes readiness, drains on scale-down, replaces failed
// instances and reports honest status.
type Fleet struct {
	cfg Config
	log *slog.Logger

	kick    chan struct{}
	readyCh chan probeResult
	stopped chan string

	// mu guards deployments, instOwner, meters, usageQ and eventQ.
	mu          sync.Mutex
	deployments map[string]*deployment
	instOwner   map[string]string   // instance id -> deploy id
	meters      map[string]*metered // instance id -> its GPU time so far
	usageQ      []Usage             // facts for flush
	eventQ      []Event             // events for flush
}

// probeResult is a probe's report of a ready instance, with what its
// warm-up consumed.
type probeResult struct {
	deployID, instanceID string
	warmup               WarmupUsage
}

// DefaultStartTimeout is Config.StartTimeout's default.
const DefaultStartTimeout = 30 * time.Minute

// New returns a Fleet; Run starts it.
func New(cfg Config) (*Fleet, error) {
	if cfg.Runtime == nil || cfg.Store == nil || cfg.Endpoints == nil {
		return nil, errors.New("fleet: Runtime, Store and Endpoints are required")
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 10 * time.Minute
	}
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = 20 * time.Millisecond
	}
	if cfg.CrashLoopAfter <= 0 {
		cfg.CrashLoopAfter = 3
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = DefaultStartTimeout
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: time.Second}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Fleet{
		cfg:         cfg,
		log:         cfg.Logger,
		kick:        make(chan struct{}, 1),
		readyCh:     make(chan probeResult, 64),
		stopped:     make(chan string, 64),
		deployments: map[string]*deployment{},
		instOwner:   map[string]string{},
		meters:      map[string]*metered{},
	}, nil
}

// Run reconciles until ctx is done. On return it has stopped every instance.
func (f *Fleet) Run(ctx context.Context) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	f.reconcile(ctx, time.Now())
	f.flush()
	for {
		var (
			ev    *Instance
			ready *probeResult
		)
		select {
		case <-ctx.Done():
			f.shutdown()
			return nil
		case <-f.cfg.Store.Changed():
		case <-f.kick:
		case <-tick.C:
		case e := <-f.cfg.Runtime.Events():
			ev = &e
		case r := <-f.readyCh:
			ready = &r
		case id := <-f.stopped:
			f.onStopped(id)
		}
		now := time.Now() // the step's one clock read
		if ev != nil {
			f.onEvent(ctx, *ev, now)
		}
		if ready != nil {
			f.onReady(*ready, now)
		}
		f.reconcile(ctx, now)
		f.flush()
	}
}

// SetDesired sets the number of instances the autoscaler wants, clamped to
// the deployment's [min_instances, max_instances].
func (f *Fleet) SetDesired(_ context.Context, id string, n int, reason string) error {
	f.mu.Lock()
	ds, ok := f.deployments[id]
	if ok {
		ds.desired = clamp(n, ds.d.Settings.MinInstances, ds.d.Settings.MaxInstances)
		ds.desiredReason = reason
	}
	f.mu.Unlock()
	if !ok {
		return fmt.Errorf("set desired %s: %w", id, deploy.ErrNotFound)
	}
	f.poke()
	return nil
}

// Target is a deployment as the autoscaler sees it.
type Target struct {
	ID           string
	Min, Max     int
	MaxBatchSize int
	NumGPUs      int
	// Current is the deployment's desired count, which the fleet owns
	// (SetDesired, clamped to [Min, Max]) and works toward: running,
	// starting, pending and held back by quota (draining ones excluded).
	Current int
}

// Targets lists every deployment with its current instance target.
func (f *Fleet) Targets() []Target {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Target, 0, len(f.deployments))
	for id, ds := range f.deployments {
		out = append(out, Target{
			ID: id, Min: ds.d.Settings.MinInstances, Max: ds.d.Settings.MaxInstances,
			MaxBatchSize: ds.d.Config.MaxBatchSize, NumGPUs: ds.d.Config.NumGPUs, Current: ds.desired,
		})
	}
	return out
}

// Live reports a deployment's run-time status for the deploy API.
func (f *Fleet) Live(d deploy.Deployment) deploy.Live {
	f.mu.Lock()
	defer f.mu.Unlock()
	ds, ok := f.deployments[d.ID]
	if !ok {
		return Unreconciled(d)
	}
	return ds.live()
}

// Unreconciled is the status of a deployment the fleet has not reconciled
// yet (created a moment ago, or a new leader's fleet still starting).
func Unreconciled(d deploy.Deployment) deploy.Live {
	return deploy.Live{Status: deploy.StatusInitializing, Instances: deploy.Instances{Desired: d.Settings.MinInstances, Pending: d.Settings.MinInstances}}
}

// Ready is a ready instance: what the scraper of the model servers'
// metrics reads.
type Ready struct {
	DeployID, InstanceID string
	Addr                 string // host:port
	// Warmup is what the fleet's warm-up made the model server count
	// before the instance was ready: no user's request.
	Warmup WarmupUsage
}

// ReadyInstances lists the ready instances of every deployment, draining
// ones included (they still serve), ordered by deployment and instance.
func (f *Fleet) ReadyInstances() []Ready {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Ready
	for deployID, ds := range f.deployments {
		for id, in := range ds.instances {
			if in.ready {
				out = append(out, Ready{DeployID: deployID, InstanceID: id, Addr: in.addr, Warmup: in.warmup})
			}
		}
	}
	slices.SortFunc(out, func(a, b Ready) int {
		return cmp.Or(cmp.Compare(a.DeployID, b.DeployID), cmp.Compare(a.InstanceID, b.InstanceID))
	})
	return out
}

// Counts is a deployment's instances by State (see inst.state), for
// metrics; Pending adds the wanted instances the GPU quota holds back.
type Counts struct {
	DeployID, Model                    string
	Ready, Starting, Pending, Draining int
}

// Counts reports instances by state for every deployment.
func (f *Fleet) Counts() []Counts {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Counts, 0, len(f.deployments))
	for id, ds := range f.deployments {
		t := ds.tally()
		// Wanted instances the quota holds back were never asked of the
		// runtime: they count as pending, as in the API's pending.
		c := Counts{DeployID: id, Model: ds.d.FullName(),
			Ready: t.running, Starting: t.starting, Pending: t.pending + ds.quotaHeld, Draining: t.draining}
		out = append(out, c)
	}
	return out
}

func (f *Fleet) poke() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// reconcile brings instances toward desired counts, judging backoffs at now.
// Runs on Run's goroutine only, so runtime calls made here are serialised.
func (f *Fleet) reconcile(ctx context.Context, now time.Time) {
	f.mu.Lock()
	f.syncStoreLocked()
	usage := f.gpuUsageLocked()
	type start struct {
		ds   *deployment
		spec Spec
	}
	var starts []start
	for _, ds := range f.sortedLocked() {
		f.stopHungLocked(ds, now)
		active := ds.active()
		ds.quotaHeld = 0
		want := ds.desired
		switch {
		case len(active) < want:
			if ds.failed || ds.backoffUntil.After(now) {
				break // crash loop: no more attempts until the deployment is updated
			}
			for i := len(active); i < want; i++ {
				if f.cfg.GPUQuota > 0 && usage[ds.d.Owner]+ds.d.Config.NumGPUs > f.cfg.GPUQuota {
					ds.quotaHeld = want - i
					break
				}
				usage[ds.d.Owner] += ds.d.Config.NumGPUs
				starts = append(starts, start{ds, specOf(ds.d)})
			}
		case len(active) > want:
			f.scaleDownLocked(ctx, ds, active, len(active)-want)
		}
		f.noteLocked(ds, now)
	}
	f.mu.Unlock()

	for _, s := range starts {
		id, err := f.cfg.Runtime.Start(ctx, s.spec)
		if err != nil {
			f.log.Error("start instance", "deploy", s.spec.DeployID, "err", err)
			continue
		}
		f.mu.Lock()
		f.meterLocked(id, s.spec, now)
		if cur, ok := f.deployments[s.spec.DeployID]; ok && cur == s.ds {
			s.ds.instances[id] = &inst{id: id, phase: PhasePending, since: now, shown: StateStarting, shownSince: now}
			f.instOwner[id] = s.spec.DeployID
		} else {
			f.stoppingLocked(id, releasedStopped)
			go f.stopInstance(id) // deleted meanwhile
		}
		f.mu.Unlock()
	}
}

// syncStoreLocked adds new deployments, applies changed settings, and tears
// down deleted ones. Called with mu held.
func (f *Fleet) syncStoreLocked() {
	seen := map[string]bool{}
	for _, d := range f.cfg.Store.List("") {
		seen[d.ID] = true
		ds, ok := f.deployments[d.ID]
		if !ok {
			desired, takenOver := f.initialDesired(d)
			ds = &deployment{d: d, desired: desired, instances: map[string]*inst{}}
			f.deployments[d.ID] = ds
			// Announce it with no instance: request paths elsewhere
			// (activator replicas, the edge) learn it exists and hold.
			// Not one a previous leader ran: the paths route to its
			// instances until this fleet has adopted them (a push of
			// none would send warm traffic to the activators meanwhile).
			if !takenOver {
				f.pushLocked(ds)
			}
			continue
		}
		if !d.UpdatedAt.Equal(ds.d.UpdatedAt) {
			f.retryLocked(ds) // the user changed it: give it new attempts
		}
		ds.d = d
		ds.desired = clamp(ds.desired, d.Settings.MinInstances, d.Settings.MaxInstances)
	}
	for id, ds := range f.deployments {
		if seen[id] {
			continue
		}
		delete(f.deployments, id)
		f.cfg.Endpoints.Remove(id)
		for iid, in := range ds.instances {
			in.stopProbe()
			f.stoppingLocked(iid, releasedStopped)
			go f.stopInstance(iid)
		}
		f.log.Info("deployment removed: stopping its instances", "deploy", id, "instances", len(ds.instances))
	}
}

// initialDesired is the desired count of a deployment the fleet has not
// seen before: Config.Desired's (takenOver), else min_instances.
func (f *Fleet) initialDesired(d deploy.Deployment) (n int, takenOver bool) {
	if f.cfg.Desired != nil {
		if n, ok := f.cfg.Desired(d.ID); ok {
			return clamp(n, d.Settings.MinInstances, d.Settings.MaxInstances), true
		}
	}
	return d.Settings.MinInstances, false
}

// gpuUsageLocked sums GPUs held per owner: every instance asked of the
// runtime, draining ones included (they still hold their GPUs).
func (f *Fleet) gpuUsageLocked() map[string]int {
	u := map[string]int{}
	for _, ds := range f.deployments {
		u[ds.d.Owner] += len(ds.instances) * ds.d.Config.NumGPUs
	}
	return u
}

// sortedLocked returns deployments oldest first, so quota goes to the
// deployments created first.
func (f *Fleet) sortedLocked() []*deployment {
	out := make([]*deployment, 0, len(f.deployments))
	for _, ds := range f.deployments {
		out = append(out, ds)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].d.CreatedAt.Equal(out[j].d.CreatedAt) {
			return out[i].d.CreatedAt.Before(out[j].d.CreatedAt)
		}
		return out[i].d.ID < out[j].d.ID
	})
	return out
}

func clamp(n, lo, hi int) int {
	return max(lo, min(n, hi))
}

func specOf(d deploy.Deployment) Spec {
	return Spec{
		DeployID: d.ID, Owner: d.Owner, Model: d.FullName(),
		GPU: d.Config.GPU, NumGPUs: d.Config.NumGPUs, MaxBatchSize: d.Config.MaxBatchSize,
		Repo: d.Config.Weights.Repo, Revision: d.Config.Weights.Revision,
		ExtraArgs: d.Config.ExtraArgs, HFToken: d.HFToken,
	}
}
