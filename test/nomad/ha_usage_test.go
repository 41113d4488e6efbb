package nomadtest

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/thawhq/thaw/client"
	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/test/e2e"
)

// haUsageGPUs is how many GPUs the metered deployment takes: make
// cluster's agent has two A100s.
const haUsageGPUs = 2

// TestHAUsageAcrossLeaders: GPU time is counted once, and none dropped,
// across a change of leader. make cluster's two replicas share one
// PostgreSQL ledger. A deployment of two A100s (min 1, max 1) runs
// allocation A; the leader is SIGKILLed, and while no replica leads A's
// job is stopped in Nomad, so that no thaw sees A end. The other replica
// leads and starts allocation B; the killed replica, restarted, follows it
// and deletes the deployment (B ends). Against Nomad's own allocation
// times: the ledger holds exactly one held fact (at CreateTime) and one
// released fact (at FinishedAt) per allocation and none of any other
// instance; GET /deploy/{id}/usage on both replicas reports the same GPU
// seconds, sum(FinishedAt - CreateTime) x num_gpus within 1 s x num_gpus;
// Nomad never runs two allocations of the deployment; the new leader's
// thaw_gpu_seconds_total is the same figure (it closed A's interval and
// metered B). It logs ("HA-USAGE:")
// the failover, how long after A ended its interval was closed, and what
// usage says meanwhile (an open interval counts up to now).
func TestHAUsageAcrossLeaders(t *testing.T) {
	pg := e2e.StartPostgres(t)
	h := startHA(t, "--database-url", pg, perSecond, "--sim-startup", "300ms")
	db := openLedger(t, pg)
	allocs := recordAllocs(t, h.nomad)
	t0 := time.Now()
	ld, fl, _ := h.roles(30 * time.Second)
	old, survivor := h.Replicas[ld], h.Replicas[fl]
	d := h.createMetered(old.API)
	watch := h.watchAllocs(jobOf(d), 1)

	a := h.waitReplacement(survivor.API, d, "")
	aInst := d.ID + "/" + allocs.view(t, a).TaskGroup
	if !waitFor(10*time.Second, 100*time.Millisecond, func() bool { return !factAt(t, db, aInst, "held").IsZero() }) {
		t.Fatalf("no held fact of allocation %s (%s) 10s after it ran", a[:8], aInst)
	}
	time.Sleep(2 * time.Second)

	oldMetric := h.gpuMetric(old.N, d.ID)
	killed, aEnd := h.killLeaderAndStop(old, survivor, d, a, allocs)
	took, err := h.waitRole(survivor.API, e2e.RoleLeader, "", killed, leaderFailoverBound)
	if err != nil {
		t.Fatalf("no new leader within the failover bound %s: %v", leaderFailoverBound, err)
	}
	t.Logf("HA-USAGE: replica %d leads %.1fs after the leader was SIGKILLed; allocation %s ended %.1fs after the kill, before it led",
		survivor.N, took.Seconds(), a[:8], aEnd.Sub(killed).Seconds())

	b := h.waitReplacement(survivor.API, d, a)
	t.Logf("HA-USAGE: the new leader runs allocation %s %.1fs after it led", b[:8], time.Since(killed.Add(took)).Seconds())
	logOpenUsage(t, h, survivor, d.ID, t0, allocs, a, b)
	closed := waitReleased(t, db, aInst, 75*time.Second)
	t.Logf("HA-USAGE: allocation %s's interval closed at %s (%v from Nomad's FinishedAt), recorded %.1fs after it ended: %q",
		a[:8], closed.at.Format(time.RFC3339Nano), closed.at.Sub(aEnd), closed.recorded.Sub(aEnd).Seconds(), closed.reason)

	h.rejoin(old, survivor, d.ID)
	time.Sleep(2 * time.Second)
	if err := h.api(old.API).Delete(t.Context(), d.ID); err != nil {
		t.Fatalf("delete on the restarted replica: %v", err)
	}
	allocs.waitTerminal(t, b)
	bInst := d.ID + "/" + allocs.view(t, b).TaskGroup
	waitReleased(t, db, bInst, 15*time.Second)
	most, over := watch()
	for _, o := range over {
		t.Errorf("more allocations than max_instances 1: %s", o)
	}
	t.Logf("HA-USAGE: at most %d live allocation(s) of the deployment at once", most)

	want := checkLedger(t, db, d.ID, allocs, []string{a, b})
	checkReplicaUsage(t, h, d.ID, t0, want)
	survivorMetric, rejoinedMetric := h.gpuMetric(survivor.N, d.ID), h.gpuMetric(old.N, d.ID)
	t.Logf("HA-USAGE: thaw_gpu_seconds_total of the deployment: %.3f on the killed leader just before its kill, %.3f on the new leader and %.3f on the restarted replica at the end; sum over processes %.3f, Nomad's times %.3f",
		oldMetric, survivorMetric, rejoinedMetric, oldMetric+survivorMetric+rejoinedMetric, want)
	// The new leader metered both allocations from start to end: A from
	// the ledger's open interval (not from its own start), B itself.
	if math.Abs(survivorMetric-want) > 0.01 {
		t.Errorf("thaw_gpu_seconds_total on the new leader: %.3f, Nomad's times of the allocations it metered %.3f", survivorMetric, want)
	}
}

// gpuMetric is thaw_gpu_seconds_total of deployment id on the metrics
// listener (--metrics-addr, from the command line cluster.sh wrote) of
// replica n; 0 without a sample.
func (h *haCluster) gpuMetric(n int, id string) float64 {
	h.t.Helper()
	b, err := os.ReadFile(filepath.Join(h.Dir, fmt.Sprintf("replica-%d.cmd", n)))
	if err != nil {
		h.t.Fatal(err)
	}
	args := strings.Split(string(b), "\n")
	i := slices.Index(args, "--metrics-addr")
	if i < 0 || i+1 >= len(args) {
		h.t.Fatalf("replica %d runs without --metrics-addr: %q", n, args)
	}
	m, err := e2e.ScrapeMetrics(h.t.Context(), "http://"+args[i+1]+"/metrics")
	if err != nil {
		h.t.Fatalf("metrics of replica %d: %v", n, err)
	}
	v, _ := m.Sum("thaw_gpu_seconds_total", map[string]string{"deploy_id": id})
	return v
}

// createMetered creates, on the replica at base, a deployment of
// haUsageGPUs A100s with min and max 1 instance.
func (h *haCluster) createMetered(base string) deploy.View {
	h.t.Helper()
	req := haCreate(uniqueName("hausage"), 1, 1)
	n := haUsageGPUs
	req.NumGPUs = &n
	d, err := h.api(base).Create(h.t.Context(), req)
	if err != nil {
		h.t.Fatalf("create: %v", err)
	}
	return d
}

// waitReplacement waits until the deployment runs one instance, as the
// replica at base shows it, on one live allocation in Nomad other than
// prev, and returns that allocation's ID.
func (h *haCluster) waitReplacement(base string, d deploy.View, prev string) string {
	h.t.Helper()
	var v deploy.View
	var ids []string
	var err error
	if !waitFor(90*time.Second, 200*time.Millisecond, func() bool {
		ids = h.liveAllocs(jobOf(d))
		v, err = h.api(base).Get(h.t.Context(), d.ID)
		return err == nil && v.Instances.Running == 1 && len(ids) == 1 && ids[0] != prev
	}) {
		h.t.Fatalf("deployment %s not running one new allocation (other than %q) within 90s: %s (%v), Nomad: %v",
			d.ID, prev, describe(v), err, ids)
	}
	return ids[0]
}

// killLeaderAndStop SIGKILLs the leader old and, before survivor leads,
// stops deployment d's job in Nomad, so that no thaw sees its allocation
// a end. It returns when the kill was sent and when Nomad says a ended.
func (h *haCluster) killLeaderAndStop(old, survivor e2e.Replica, d deploy.View, a string, allocs *allocRecorder) (killed, aEnd time.Time) {
	t := h.t
	t.Helper()
	pid := h.ReplicaPID(old.N)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill the leader (pid %d): %v", pid, err)
	}
	killed = time.Now()
	if _, _, err := h.nomad.Jobs().Deregister(jobOf(d), false, nil); err != nil {
		t.Fatalf("stop job %s: %v", jobOf(d), err)
	}
	aEnd = finishedAt(allocs.waitTerminal(t, a))
	hs, err := e2e.GetHealth(t.Context(), survivor.API)
	if err != nil || hs.Role != e2e.RoleFollower {
		t.Fatalf("replica %d says %+v (%v) once allocation %s ended: the test needs it to end while no replica leads",
			survivor.N, hs, err, a[:8])
	}
	t.Logf("HA-USAGE: SIGKILLed the leader (replica %d, pid %d); allocation %s of %s ended at %s while no replica led",
		old.N, pid, a[:8], jobOf(d), aEnd.Format(time.RFC3339Nano))
	return killed, aEnd
}

// ledgerFact is one row of the ledger as the HA usage test logs it.
type ledgerFact struct {
	at, recorded time.Time
	reason       string
}

// waitReleased waits up to timeout for the released fact of instance inst.
func waitReleased(t *testing.T, db *sql.DB, inst string, timeout time.Duration) ledgerFact {
	t.Helper()
	var f ledgerFact
	ok := waitFor(timeout, 200*time.Millisecond, func() bool {
		var at, rec int64
		err := db.QueryRowContext(context.Background(),
			"SELECT at_us, recorded_us, reason FROM facts WHERE instance_id = $1 AND kind = 'released'", inst).Scan(&at, &rec, &f.reason)
		f.at, f.recorded = time.UnixMicro(at), time.UnixMicro(rec)
		return err == nil
	})
	if !ok {
		t.Fatalf("no released fact of instance %s within %s", inst, timeout)
	}
	return f
}

// checkLedger checks the ledger's facts about deployment deployID against
// Nomad's record of its allocations ids: one held fact at each one's
// CreateTime and one released fact at its FinishedAt, no fact of another
// instance. It returns the GPU seconds Nomad's times give.
func checkLedger(t *testing.T, db *sql.DB, deployID string, allocs *allocRecorder, ids []string) float64 {
	t.Helper()
	facts := ledgerFacts(t, db, deployID)
	var want float64
	insts := map[string]bool{}
	for _, id := range ids {
		al := allocs.view(t, id)
		inst := deployID + "/" + al.TaskGroup
		insts[inst] = true
		held, released := allocTimes(al)
		want += released.Sub(held).Seconds() * haUsageGPUs
		checkFact(t, facts, inst, "held", held)
		checkFact(t, facts, inst, "released", released)
		t.Logf("HA-USAGE: allocation %s (%s): Nomad %s .. %s = %.3f s; ledger held %v released %v ready %v",
			id[:8], al.TaskGroup, held.Format(time.RFC3339Nano), released.Format(time.RFC3339Nano),
			released.Sub(held).Seconds(), facts[inst]["held"], facts[inst]["released"], facts[inst]["ready"])
	}
	for inst, kinds := range facts {
		if !insts[inst] {
			t.Errorf("ledger facts %v of instance %s, which is none of the deployment's allocations", slices.Sorted(maps.Keys(kinds)), inst)
		}
	}
	return want
}

// logOpenUsage logs what /deploy/{id}/usage on replica r says while
// allocation a's interval may still be open in the ledger (nobody saw it
// end; a writer closes it at its next check of Nomad's record): an open
// interval counts up to now, so until then the report exceeds Nomad's
// times by about the time since a ended.
func logOpenUsage(t *testing.T, h *haCluster, r e2e.Replica, id string, t0 time.Time, allocs *allocRecorder, a, b string) {
	t.Helper()
	rep := replicaUsage(t, h, r, id, t0)
	now := time.Now()
	aHeld, aEnd := allocTimes(allocs.view(t, a))
	bHeld, _ := allocTimes(allocs.view(t, b))
	nomadSoFar := (aEnd.Sub(aHeld) + now.Sub(bHeld)).Seconds() * haUsageGPUs
	t.Logf("HA-USAGE: with allocation %s over for %.1fs and %s running: replica %d reports %.3f GPU-s, Nomad's times so far %.3f GPU-s (%+.3f)",
		a[:8], now.Sub(aEnd).Seconds(), b[:8], r.N, rep.Total.GPUSeconds, nomadSoFar, rep.Total.GPUSeconds-nomadSoFar)
}

// replicaUsage is GET /deploy/{id}/usage on replica r since an hour
// before from.
func replicaUsage(t *testing.T, h *haCluster, r e2e.Replica, id string, from time.Time) e2e.UsageReport {
	t.Helper()
	raw, err := h.api(r.API).UsageRaw(t.Context(), client.UsageQuery{DeployID: id, From: from.Add(-time.Hour)})
	if err != nil {
		t.Fatalf("GET /deploy/%s/usage on replica %d: %v", id, r.N, err)
	}
	var rep e2e.UsageReport
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatalf("GET /deploy/%s/usage on replica %d: %v in %s", id, r.N, err, raw)
	}
	return rep
}

// checkReplicaUsage checks that GET /deploy/{id}/usage on every replica
// of h reports want GPU seconds (within 1 s per GPU), the same on each.
func checkReplicaUsage(t *testing.T, h *haCluster, id string, from time.Time, want float64) {
	t.Helper()
	var got []float64
	for _, r := range h.Replicas {
		rep := replicaUsage(t, h, r, id, from)
		gs := rep.Total.GPUSeconds
		got = append(got, gs)
		t.Logf("HA-USAGE: replica %d: /deploy/%s/usage %.3f GPU-s (loading %.3f), %.2f USD; Nomad's allocation times: %.3f GPU-s",
			r.N, id, gs, rep.Total.LoadingSeconds, rep.Total.CostUSD, want)
		if math.Abs(gs-want) > 1.0*haUsageGPUs {
			t.Errorf("replica %d: %.3f GPU-seconds, Nomad's allocation times give %.3f (tolerance %d)", r.N, gs, want, haUsageGPUs)
		}
		if math.Abs(rep.Total.CostUSD-gs) > 0.01 {
			t.Errorf("replica %d: cost %.4f USD at 1 USD per GPU-second, want %.4f", r.N, rep.Total.CostUSD, gs)
		}
	}
	if len(got) == 2 && math.Abs(got[0]-got[1]) > 0.001 {
		t.Errorf("the replicas disagree: %.3f and %.3f GPU-seconds", got[0], got[1])
	}
}

// allocTimes is Nomad's CreateTime and FinishedAt of a: when its GPUs
// were taken and freed.
func allocTimes(a *api.Allocation) (held, released time.Time) {
	return time.Unix(0, a.CreateTime), finishedAt(a)
}
