package nomadtest

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"maps"
	"math"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"

	"github.com/hashicorp/nomad/api"

	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/test/e2e"
)

// perSecond prices an A100-80GB at 3600 USD an hour: one USD per
// GPU-second, so that costs read as seconds.
const perSecond = "--gpu-prices=A100-80GB=3600"

// TestServerUsage: a 2-GPU deployment (the agent's two A100s) metered into
// PostgreSQL by thaw server. Its first allocation runs across a SIGTERM
// restart of thaw (adopted), then thaw is SIGKILLed and the job stopped in
// Nomad while thaw is down, so that no thaw sees that allocation end: the
// restarted thaw closes its interval from Nomad's record. A second
// allocation runs until the deployment is deleted. Against Nomad's own
// allocation times: /deploy/{id}/usage reports sum(FinishedAt - CreateTime)
// x num_gpus within 1 s x num_gpus; the ledger holds exactly one held and
// one released fact per allocation, at those times; the weekly statements
// total what /usage costs.
func TestServerUsage(t *testing.T) {
	pg := e2e.StartPostgres(t)
	nc := nomadClient() // one client: polling with a new one each time exhausts Nomad's connections per client
	db := openLedger(t, pg)
	opts := serverOpts{
		redisAddr: startRedis(t), dataDir: t.TempDir(), adoptGrace: 3 * time.Second,
		args: []string{"--database-url", pg, perSecond},
	}
	t0 := time.Now()
	s := startServer(t, opts)
	const gpus = 2
	allocs := recordAllocs(t, nc)
	d := s.create(uniqueName("usage"), "A100-80GB", gpus, 4, 1, 1)
	running := func(d deploy.View) bool { return d.Instances.Running == 1 }

	// Allocation A runs across a SIGTERM restart: adopted, not replaced.
	s.waitDeploy(d.ID, 60*time.Second, "running", running)
	a := onlyAlloc(t, waitLiveAllocs(t, d.ID, 1))
	time.Sleep(3 * time.Second)
	s.stop()
	s = startServer(t, opts)
	s.waitDeploy(d.ID, 30*time.Second, "running after a restart", running)
	time.Sleep(3 * time.Second) // past the adoption grace
	if got := onlyAlloc(t, waitLiveAllocs(t, d.ID, 1)); got != a {
		t.Fatalf("after the restart allocation %s runs, want %s adopted", got, a)
	}

	// SIGKILL, and A ends while no thaw watches: the job is stopped in Nomad.
	s.th.Kill()
	if _, _, err := nc.Jobs().Deregister(jobOf(d), false, nil); err != nil {
		t.Fatalf("stop job %s: %v", jobOf(d), err)
	}
	aEnd := finishedAt(allocs.waitTerminal(t, a))
	t.Logf("allocation %s of %s ended at %s while thaw was down", a[:8], jobOf(d), aEnd.Format(time.RFC3339Nano))

	// The restarted thaw closes A's interval from Nomad's record (at
	// start, at the latest a minute later) and starts allocation B.
	s = startServer(t, opts)
	aGroup := allocs.view(t, a).TaskGroup
	var closed time.Time
	if !waitFor(70*time.Second, 200*time.Millisecond, func() bool {
		closed = factAt(t, db, d.ID+"/"+aGroup, "released")
		return !closed.IsZero()
	}) {
		t.Fatalf("the interval of %s (allocation %s, ended while thaw was down) was not closed", aGroup, a[:8])
	}
	if diff := closed.Sub(aEnd); diff.Abs() > time.Millisecond {
		t.Errorf("interval of allocation %s closed at %s, %v from Nomad's FinishedAt %s", a[:8],
			closed.Format(time.RFC3339Nano), diff, aEnd.Format(time.RFC3339Nano))
	}
	s.waitDeploy(d.ID, 60*time.Second, "running again after the kill", running)
	b := onlyAlloc(t, waitLiveAllocs(t, d.ID, 1))
	if b == a {
		t.Fatalf("allocation %s runs again after its job was stopped", a)
	}
	time.Sleep(3 * time.Second)
	s.delete(d.ID)
	allocs.waitTerminal(t, b)

	// Nomad's record of both allocations against the ledger's facts.
	var want float64
	held := map[string]time.Time{} // instance ID -> CreateTime
	released := map[string]time.Time{}
	for _, id := range []string{a, b} {
		al := allocs.view(t, id)
		inst := d.ID + "/" + al.TaskGroup
		held[inst], released[inst] = time.Unix(0, al.CreateTime), finishedAt(al)
		want += released[inst].Sub(held[inst]).Seconds() * gpus
		t.Logf("allocation %s (%s): %s .. %s, %.3f s", id[:8], al.TaskGroup, held[inst].Format(time.RFC3339Nano),
			released[inst].Format(time.RFC3339Nano), released[inst].Sub(held[inst]).Seconds())
	}
	if !waitFor(10*time.Second, 100*time.Millisecond, func() bool {
		return !factAt(t, db, d.ID+"/"+allocs.view(t, b).TaskGroup, "released").IsZero()
	}) {
		t.Fatalf("allocation %s of the deleted deployment has no released fact", b[:8])
	}
	facts := ledgerFacts(t, db, d.ID)
	for inst, at := range held {
		checkFact(t, facts, inst, "held", at)
		checkFact(t, facts, inst, "released", released[inst])
	}
	for inst, kinds := range facts {
		if _, ok := held[inst]; !ok {
			t.Errorf("ledger facts %v of instance %s, which is none of the deployment's allocations", slices.Sorted(maps.Keys(kinds)), inst)
		}
	}

	from := t0.Add(-time.Hour).UTC().Format(time.RFC3339)
	var dep, all e2e.UsageReport
	s.getJSON("/deploy/"+d.ID+"/usage?from="+url.QueryEscape(from), &dep)
	s.getJSON("/usage?from="+url.QueryEscape(from), &all)
	got := dep.Total.GPUSeconds
	t.Logf("usage %.3f GPU-s (loading %.3f), %.2f USD; Nomad's allocation times: %.3f GPU-s", got, dep.Total.LoadingSeconds, dep.Total.CostUSD, want)
	if math.Abs(got-want) > 1.0*gpus {
		t.Errorf("/deploy/%s/usage: %.3f GPU-seconds, Nomad's allocation times give %.3f (tolerance %d)", d.ID, got, want, gpus)
	}
	if len(dep.Items) != 1 {
		t.Errorf("/deploy/%s/usage items %+v, want one", d.ID, dep.Items)
	} else if it := dep.Items[0]; it.DeployID != d.ID || it.GPU != "A100-80GB" || it.NumGPUs != gpus {
		t.Errorf("usage item %+v: want this deployment, A100-80GB x%d", it, gpus)
	}
	if math.Abs(dep.Total.CostUSD-got) > 0.01 {
		t.Errorf("cost %.4f USD at 1 USD per GPU-second, want %.4f", dep.Total.CostUSD, got)
	}
	if math.Abs(all.Total.CostUSD-dep.Total.CostUSD) > 0.01 {
		t.Errorf("/usage total %.4f USD, the only deployment's %.4f USD", all.Total.CostUSD, dep.Total.CostUSD)
	}

	var inv struct {
		Statements []struct {
			TotalUSD float64 `json:"total_usd"`
		} `json:"statements"`
	}
	s.getJSON("/usage/invoices", &inv)
	sum := 0.0
	for _, st := range inv.Statements {
		sum += st.TotalUSD
	}
	if math.Abs(sum-all.Total.CostUSD) > 0.01 {
		t.Errorf("statements total %.4f USD, /usage %.4f USD", sum, all.Total.CostUSD)
	}
}

// getJSON decodes the answer of GET path into v; anything but 200 fails
// the test.
func (s *server) getJSON(path string, v any) {
	s.t.Helper()
	r, err := s.do(http.MethodGet, path, nil)
	if err != nil {
		s.t.Fatalf("GET %s: %v", path, err)
	}
	if r.Status != http.StatusOK {
		s.t.Fatalf("GET %s: %s", path, r)
	}
	if err := json.Unmarshal(r.Body, v); err != nil {
		s.t.Fatalf("GET %s: %v in %s", path, err, r.Body)
	}
}

// onlyAlloc returns the ID of the one allocation in live.
func onlyAlloc(t *testing.T, live map[string]*api.AllocationListStub) string {
	t.Helper()
	for id := range live {
		return id
	}
	t.Fatal("no live allocation")
	return ""
}

// finishedAt is the latest FinishedAt of a's tasks.
func finishedAt(a *api.Allocation) time.Time {
	var last time.Time
	for _, ts := range a.TaskStates {
		if ts != nil && ts.FinishedAt.After(last) {
			last = ts.FinishedAt
		}
	}
	return last
}

// openLedger connects to thaw's ledger database.
func openLedger(t *testing.T, dbURL string) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// factAt is when the ledger's fact of kind about instance happened, zero
// without one.
func factAt(t *testing.T, db *sql.DB, instance, kind string) time.Time {
	t.Helper()
	var us int64
	err := db.QueryRowContext(context.Background(),
		"SELECT at_us FROM facts WHERE instance_id = $1 AND kind = $2", instance, kind).Scan(&us)
	switch {
	case err == nil:
		return time.UnixMicro(us)
	case errors.Is(err, sql.ErrNoRows):
		return time.Time{}
	}
	t.Fatalf("read fact %s %s: %v", instance, kind, err)
	return time.Time{}
}

// ledgerFacts reads every fact row of a deployment: instance -> kind ->
// the times recorded (more than one would be a duplicate).
func ledgerFacts(t *testing.T, db *sql.DB, deployID string) map[string]map[string][]time.Time {
	t.Helper()
	rows, err := db.QueryContext(context.Background(),
		"SELECT instance_id, kind, at_us FROM facts WHERE deploy_id = $1", deployID)
	if err != nil {
		t.Fatalf("read facts: %v", err)
	}
	defer rows.Close()
	out := map[string]map[string][]time.Time{}
	for rows.Next() {
		var inst, kind string
		var us int64
		if err := rows.Scan(&inst, &kind, &us); err != nil {
			t.Fatalf("read facts: %v", err)
		}
		if out[inst] == nil {
			out[inst] = map[string][]time.Time{}
		}
		out[inst][kind] = append(out[inst][kind], time.UnixMicro(us))
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read facts: %v", err)
	}
	return out
}

// checkFact fails the test unless facts holds exactly one fact of kind
// about inst, at want (to the ledger's microsecond).
func checkFact(t *testing.T, facts map[string]map[string][]time.Time, inst, kind string, want time.Time) {
	t.Helper()
	got := facts[inst][kind]
	if len(got) != 1 {
		t.Errorf("instance %s: %d %s facts %v, want one at %s", inst, len(got), kind, got, want.Format(time.RFC3339Nano))
		return
	}
	if diff := got[0].Sub(want); diff.Abs() > time.Millisecond {
		t.Errorf("instance %s: %s at %s, %v from Nomad's %s", inst, kind, got[0].Format(time.RFC3339Nano), diff, want.Format(time.RFC3339Nano))
	}
}

// allocRecorder keeps the latest view of each allocation from Nomad's
// event stream: Nomad forgets a purged job's allocations as soon as
// they are over, and deleting a deployment purges its job.
type allocRecorder struct {
	// mu guards last and err.
	mu   sync.Mutex
	last map[string]*api.Allocation // by allocation ID
	err  error                      // the stream's failure
}

// recordAllocs follows every allocation until the test ends.
func recordAllocs(t *testing.T, nc *api.Client) *allocRecorder {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := nc.EventStream().Stream(ctx, map[api.Topic][]string{api.TopicAllocation: {"*"}}, 0, nil)
	if err != nil {
		cancel()
		t.Fatalf("Nomad's event stream: %v", err)
	}
	r := &allocRecorder{last: map[string]*api.Allocation{}}
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for evs := range ch {
			r.mu.Lock()
			if evs.Err != nil && ctx.Err() == nil {
				r.err = evs.Err
			}
			for _, e := range evs.Events {
				a, err := e.Allocation()
				if err != nil || a == nil {
					continue
				}
				if prev := r.last[a.ID]; prev == nil || a.ModifyIndex >= prev.ModifyIndex {
					r.last[a.ID] = a
				}
			}
			r.mu.Unlock()
		}
	}()
	return r
}

// waitTerminal waits until allocation id is over and returns Nomad's last
// view of it.
func (r *allocRecorder) waitTerminal(t *testing.T, id string) *api.Allocation {
	t.Helper()
	var a *api.Allocation
	if !waitFor(60*time.Second, 50*time.Millisecond, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		a = r.last[id]
		return a != nil && a.ClientTerminalStatus() && !finishedAt(a).IsZero()
	}) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if a == nil {
			t.Fatalf("allocation %s: no event of it (stream error: %v)", id, r.err)
		}
		t.Fatalf("allocation %s not seen over within 60s (last seen %s/%s): a job purged before its allocations end leaves no record of when they did",
			id, a.DesiredStatus, a.ClientStatus)
	}
	return a
}

// view is the latest view of allocation id; the test fails without one.
func (r *allocRecorder) view(t *testing.T, id string) *api.Allocation {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	a := r.last[id]
	if a == nil {
		t.Fatalf("no event of allocation %s (stream error: %v)", id, r.err)
	}
	return a
}
