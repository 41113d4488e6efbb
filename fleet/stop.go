package fleet

// Scale-down and stopping: which instances leave, draining, and shutdown.

import (
	"context"
	"sort"
	"sync"
	"time"
)

// scaleDownLocked removes n active instances: the ones not serving first
// (pending, then starting), then ready ones, which drain before they stop.
// Called with mu held.
func (f *Fleet) scaleDownLocked(ctx context.Context, ds *deployment, active []*inst, n int) {
	sort.SliceStable(active, func(i, j int) bool { return victimRank(active[i]) < victimRank(active[j]) })
	drained := false
	for _, in := range active[:n] {
		in.draining = true // leaving: out of desired, still holds its GPUs
		f.stoppingLocked(in.id, releasedStopped)
		if !in.ready {
			in.stopProbe()
			go f.stopInstance(in.id)
			continue
		}
		drained = true
		go f.drainThenStop(ctx, ds.d.ID, in.id)
	}
	if drained {
		f.pushLocked(ds)
	}
	f.log.Info("scaling down", "deploy", ds.d.ID, "by", n, "to", ds.desired, "reason", ds.desiredReason)
}

func victimRank(in *inst) int {
	switch {
	case in.phase == PhasePending:
		return 0
	case !in.ready:
		return 1
	default:
		return 2
	}
}

func (f *Fleet) drainThenStop(ctx context.Context, deployID, id string) {
	t := time.NewTimer(f.cfg.DrainTimeout)
	defer t.Stop()
	select {
	case <-f.cfg.Endpoints.Drained(deployID, id):
	case <-t.C:
		f.log.Warn("drain timeout: stopping instance with requests in flight", "deploy", deployID, "instance", id)
	case <-ctx.Done():
	}
	f.stopInstance(id)
}

// stopInstance stops id and reports it on f.stopped.
func (f *Fleet) stopInstance(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := f.cfg.Runtime.Stop(ctx, id); err != nil {
		f.log.Error("stop instance", "instance", id, "err", err)
	}
	select {
	case f.stopped <- id:
	default:
		go func() { f.stopped <- id }()
	}
}

func (f *Fleet) onStopped(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	deployID, ok := f.instOwner[id]
	if !ok {
		return
	}
	delete(f.instOwner, id)
	if ds, in := f.instLocked(deployID, id); in != nil {
		in.stopProbe()
		delete(ds.instances, id)
		f.pushLocked(ds)
	}
}

func (f *Fleet) shutdown() {
	f.mu.Lock()
	var ids []string
	for id := range f.instOwner {
		ids = append(ids, id)
	}
	f.mu.Unlock()
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = f.cfg.Runtime.Stop(ctx, id)
		}()
	}
	wg.Wait()
}
