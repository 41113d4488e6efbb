package nomadtest

import (
	"cmp"
	"context"
	"encoding/json"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/thawhq/thaw/client"
	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/test/e2e"
)

// TestServerSpendingLimit: user dev, with a 10 USD monthly limit and a
// webhook, runs a 1 x A100 deployment at 1 USD per GPU-second on Nomad,
// metered into PostgreSQL. Within seconds of the spend reaching the limit
// (the allocation's CreateTime + 10 s) the deployment is at zero and Nomad
// runs no allocation of it; an inference request and min_instances 1 get
// OpenAI's 429 insufficient_quota; the webhook got 50, 80 and 100%, in
// order and signed, and GET /account/events lists them. Raising the limit
// lets the next request wake the deployment.
func TestServerSpendingLimit(t *testing.T) {
	const (
		limitUSD = 10.0
		secret   = "hook-secret-nomad"
	)
	pg := e2e.StartPostgres(t)
	nc := nomadClient()
	hooks := e2e.ReceiveWebhooks(t, secret)
	s := startServer(t, serverOpts{args: []string{"--database-url", pg, perSecond, "--spending-check-interval=500ms"}})
	if r, err := s.do(http.MethodPut, "/account", map[string]any{
		"spending_limit_usd": limitUSD, "webhook_url": hooks.URL + "/thaw", "webhook_secret": secret,
	}); err != nil || r.Status != http.StatusOK {
		t.Fatalf("PUT /account: %v %s", err, r)
	}
	d := s.create(uniqueName("capped"), "A100-80GB", 1, 4, 1, 1)
	t.Cleanup(func() { s.delete(d.ID) })

	// The instance serves before the limit is reached: the block drains a
	// running deployment, not one still starting.
	s.waitDeploy(d.ID, 8*time.Second, "running", func(d deploy.View) bool { return d.Instances.Running == 1 })
	allocs := jobAllocs(t, nc, d.ID)
	if len(allocs) != 1 {
		t.Fatalf("%d allocations of %s before the limit, want 1", len(allocs), jobOf(d))
	}
	alloc := allocs[0]
	// 1 GPU at 1 USD a second: the spend reaches the limit limitUSD
	// seconds after Nomad placed the allocation.
	crossing := time.Unix(0, alloc.CreateTime).Add(time.Duration(limitUSD * float64(time.Second)))

	acct := waitBlocked(t, s, 30*time.Second)
	blockedSeen := time.Now()
	t.Logf("blocked at %.2f USD spent of %.0f, seen %v after crossing", acct.SpentThisMonthUSD, limitUSD, blockedSeen.Sub(crossing).Round(time.Millisecond))
	if acct.SpentThisMonthUSD < limitUSD || acct.SpentThisMonthUSD > limitUSD+3 {
		t.Errorf("blocked at %.2f USD spent of %.0f at 1 USD/s: enforcement came late", acct.SpentThisMonthUSD, limitUSD)
	}

	// At zero: the deploy API says so and Nomad runs nothing of it.
	s.waitDeploy(d.ID, 10*time.Second, "drained to zero", func(d deploy.View) bool {
		return d.Instances.Running == 0 && d.Instances.Desired == 0
	})
	apiZero := time.Now()
	var ended *api.AllocationListStub
	if !waitFor(30*time.Second, 50*time.Millisecond, func() bool {
		ended = nil
		for _, a := range jobAllocs(t, nc, d.ID) {
			if !allocOver(a) {
				return false
			}
			if a.ID == alloc.ID {
				ended = a
			}
		}
		return ended != nil
	}) {
		t.Fatalf("allocation %s still runs after the limit was reached (client status %v)", alloc.ID[:8], describeAllocs(jobAllocs(t, nc, d.ID)))
	}
	finished := stubFinishedAt(ended)
	t.Logf("crossing %s; at zero in the deploy API +%v; allocation %s finished (Nomad) +%v, client status %s",
		crossing.Format(time.RFC3339Nano), apiZero.Sub(crossing).Round(time.Millisecond), alloc.ID[:8],
		finished.Sub(crossing).Round(time.Millisecond), ended.ClientStatus)
	if lag := finished.Sub(crossing); lag > 5*time.Second {
		t.Errorf("allocation %s finished %v after the spend crossed the limit, want within 5s", alloc.ID[:8], lag)
	}

	// Refused at once, nothing wakes.
	t0 := time.Now()
	r, err := s.chat(d.FullName, 5)
	if err != nil {
		t.Fatalf("request over the limit: %v", err)
	}
	checkQuotaError(t, "request over the limit", r, "")
	if took := time.Since(t0); took > 2*time.Second {
		t.Errorf("request over the limit answered after %v, want at once", took)
	}
	r, err = s.do(http.MethodPut, "/deploy/"+d.ID, map[string]any{"settings": map[string]int{"min_instances": 1, "max_instances": 1}})
	if err != nil {
		t.Fatalf("PUT /deploy/%s: %v", d.ID, err)
	}
	checkQuotaError(t, "min_instances 1 over the limit", r, "settings.min_instances")
	if got := s.get(d.ID); got.Settings.MinInstances != 1 || got.Instances.Desired != 0 {
		// The stored settings are the user's (min 1, from create); the
		// fleet reads them as zero while blocked.
		t.Errorf("after the refused update: settings min %d, desired %d; want min 1 kept, desired 0", got.Settings.MinInstances, got.Instances.Desired)
	}
	for _, a := range jobAllocs(t, nc, d.ID) {
		if !allocOver(a) {
			t.Errorf("allocation %s (%s) after refused requests: something woke the deployment", a.ID[:8], a.ClientStatus)
		}
	}

	// The webhook got 50, 80 and 100%, signed, in order; the events say
	// the same.
	want := []int{50, 80, 100}
	if !waitFor(10*time.Second, 50*time.Millisecond, func() bool { return len(hooks.Posts()) >= len(want) }) {
		t.Errorf("webhook: %d events within 10s, want %d", len(hooks.Posts()), len(want))
	}
	got := hooks.Posts()
	if bad := hooks.Bad(); bad != 0 {
		t.Errorf("webhook: %d posts with a bad signature", bad)
	}
	if th := hooks.Thresholds(); !slices.Equal(th, want) {
		t.Errorf("webhook thresholds %v, want %v in order", th, want)
	}
	for _, h := range got {
		if h.Event != "spending_limit" || h.Body.Type != "spending_limit" || h.Body.LimitUSD != limitUSD {
			t.Errorf("webhook post: X-Thaw-Event %q, body %+v; want spending_limit at a %.0f USD limit", h.Event, h.Body, limitUSD)
		}
		if blocked := h.Body.Threshold == 100; h.Body.Blocked != blocked {
			t.Errorf("webhook at %d%%: blocked %v, want %v", h.Body.Threshold, h.Body.Blocked, blocked)
		}
	}
	evs, err := s.api().Events(context.Background(), time.Time{})
	if err != nil {
		t.Fatalf("GET /account/events: %v", err)
	}
	var listed []int
	for _, e := range evs {
		var det e2e.SpendingEvent
		if err := json.Unmarshal(e.Detail, &det); err != nil {
			t.Errorf("event %+v: detail: %v", e, err)
		}
		if e.Type == "spending_limit" {
			listed = append(listed, det.Threshold)
		}
	}
	if !slices.Equal(listed, want) {
		t.Errorf("GET /account/events thresholds %v, want %v in order", listed, want)
	}

	// Raised: the next request wakes the deployment and is served.
	if r, err := s.do(http.MethodPut, "/account", map[string]any{"spending_limit_usd": 100000}); err != nil || r.Status != http.StatusOK {
		t.Fatalf("raise the limit: %v %s", err, r)
	}
	var last string
	if !waitFor(30*time.Second, 100*time.Millisecond, func() bool {
		last = checkChat(s.chat(d.FullName, 5))
		return last == ""
	}) {
		t.Errorf("no request served within 30s of raising the limit: %s", last)
	}
}

// TestServerStartTimeout: a simulator that takes an hour to load, under
// --start-timeout=2s. thaw stops each allocation a few seconds after it
// started running; after 3 such failures the deployment is failed with
// the start timeout as its reason and no allocation is started again.
// Every GPU-second of it is never-ready time, and the ledger agrees with
// Nomad's allocation times.
func TestServerStartTimeout(t *testing.T) {
	const timeout = 2 * time.Second
	pg := e2e.StartPostgres(t)
	nc := nomadClient()
	s := startServer(t, serverOpts{args: []string{"--database-url", pg, perSecond,
		"--start-timeout=" + timeout.String(), "--sim-startup=1h"}})
	from := time.Now().Add(-time.Hour)
	d := s.create(uniqueName("hung"), "A100-80GB", 1, 4, 1, 1)
	t.Cleanup(func() { s.delete(d.ID) })

	failed := s.waitDeploy(d.ID, 60*time.Second, "failed by the start timeout", func(d deploy.View) bool {
		return d.Status == deploy.StatusFailed
	})
	t.Logf("failed: %s fail_reason=%q", describe(failed), failed.FailReason)
	if !strings.Contains(failed.FailReason, "start timeout") {
		t.Errorf("fail reason %q, want the start timeout named", failed.FailReason)
	}
	var allocs []*api.AllocationListStub
	if !waitFor(30*time.Second, 100*time.Millisecond, func() bool {
		allocs = jobAllocs(t, nc, d.ID)
		for _, a := range allocs {
			if !allocOver(a) || stubFinishedAt(a).IsZero() {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("allocations still running after the deployment failed: %v", describeAllocs(allocs))
	}
	// Failed means no more tries: past the longest backoff (2 s) nothing new.
	time.Sleep(3 * time.Second)
	if later := jobAllocs(t, nc, d.ID); len(later) != len(allocs) {
		t.Errorf("%d allocations 3s after the deployment failed, %d before: it is still retried", len(later), len(allocs))
	}
	if len(allocs) != 3 {
		t.Errorf("%d allocations before the deployment failed, want 3 (the crash-loop bound): %v", len(allocs), describeAllocs(allocs))
	}

	slices.SortFunc(allocs, func(a, b *api.AllocationListStub) int { return cmp.Compare(a.CreateTime, b.CreateTime) })

	// Each allocation was stopped by thaw within seconds of the timeout.
	var nomadSeconds float64
	for _, a := range allocs {
		started, finished := stubStartedAt(a), stubFinishedAt(a)
		ran := finished.Sub(started)
		nomadSeconds += finished.Sub(time.Unix(0, a.CreateTime)).Seconds()
		t.Logf("allocation %s: placed %s, running %s .. %s (%v), %s", a.ID[:8],
			time.Unix(0, a.CreateTime).Format(time.RFC3339Nano), started.Format(time.RFC3339Nano),
			finished.Format(time.RFC3339Nano), ran.Round(time.Millisecond), a.ClientStatus)
		if started.IsZero() || ran < timeout || ran > timeout+5*time.Second {
			t.Errorf("allocation %s ran %v, want stopped within 5s after the %v start timeout", a.ID[:8], ran, timeout)
		}
	}

	// All of it never-ready time, as Nomad's records give it.
	var rep deployUsage
	var last string
	if !waitFor(15*time.Second, 200*time.Millisecond, func() bool {
		rep = deploymentUsage(t, s, d.ID, from)
		last = rep.String()
		return math.Abs(rep.GPUSeconds-nomadSeconds) <= float64(len(allocs))
	}) {
		t.Fatalf("/deploy/%s/usage %s; Nomad's allocation times give %.3f GPU-s", d.ID, last, nomadSeconds)
	}
	t.Logf("usage %s; Nomad's allocation times %.3f GPU-s", last, nomadSeconds)
	if rep.NeverReadySeconds <= 0 || math.Abs(rep.NeverReadySeconds-rep.GPUSeconds) > 0.001 {
		t.Errorf("/deploy/%s/usage: never_ready_seconds %.3f of gpu_seconds %.3f, want all of it", d.ID, rep.NeverReadySeconds, rep.GPUSeconds)
	}
}

// waitBlocked polls GET /account until the caller is blocked.
func waitBlocked(t *testing.T, s *server, timeout time.Duration) accountState {
	t.Helper()
	var a accountState
	if !waitFor(timeout, 50*time.Millisecond, func() bool {
		s.getJSON("/account", &a)
		return a.Blocked
	}) {
		t.Fatalf("not blocked within %v: %+v", timeout, a)
	}
	return a
}

// accountState is the part of GET /account the tests read.
type accountState struct {
	SpentThisMonthUSD float64 `json:"spent_this_month_usd"`
	SpendingLimitUSD  float64 `json:"spending_limit_usd"`
	Blocked           bool    `json:"blocked"`
}

// checkQuotaError fails the test unless r is OpenAI's 429 with type and
// code insufficient_quota (and param, when given).
func checkQuotaError(t *testing.T, what string, r response, param string) {
	t.Helper()
	var e struct {
		Error struct {
			Type, Code, Message string
			Param               *string
		} `json:"error"`
	}
	_ = json.Unmarshal(r.Body, &e)
	ok := r.Status == http.StatusTooManyRequests && e.Error.Type == "insufficient_quota" && e.Error.Code == "insufficient_quota"
	if param != "" && (e.Error.Param == nil || *e.Error.Param != param) {
		ok = false
	}
	if !ok {
		t.Errorf("%s: %s, want 429 insufficient_quota (param %q)", what, r, param)
	}
}

// jobAllocs lists every allocation of a deployment's job, stopped ones
// included.
func jobAllocs(t *testing.T, nc *api.Client, deployID string) []*api.AllocationListStub {
	t.Helper()
	stubs, _, err := nc.Jobs().Allocations("thaw-"+deployID, true, nil)
	if err != nil {
		t.Fatalf("allocations of thaw-%s: %v", deployID, err)
	}
	return stubs
}

// allocOver reports whether Nomad's client has finished with a: its
// tasks no longer run or wait to.
func allocOver(a *api.AllocationListStub) bool {
	switch a.ClientStatus {
	case api.AllocClientStatusComplete, api.AllocClientStatusFailed, api.AllocClientStatusLost:
		return true
	}
	return false
}

// describeAllocs says each allocation's ID and client status.
func describeAllocs(as []*api.AllocationListStub) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.ID[:8]+" "+a.DesiredStatus+"/"+a.ClientStatus)
	}
	return out
}

// stubStartedAt is when a's first task started, zero if none did.
func stubStartedAt(a *api.AllocationListStub) time.Time {
	var first time.Time
	for _, ts := range a.TaskStates {
		if ts != nil && !ts.StartedAt.IsZero() && (first.IsZero() || ts.StartedAt.Before(first)) {
			first = ts.StartedAt
		}
	}
	return first
}

// stubFinishedAt is when a's last task finished, zero while one runs.
func stubFinishedAt(a *api.AllocationListStub) time.Time {
	var last time.Time
	for _, ts := range a.TaskStates {
		if ts == nil {
			continue
		}
		if ts.FinishedAt.IsZero() {
			return time.Time{}
		}
		if ts.FinishedAt.After(last) {
			last = ts.FinishedAt
		}
	}
	return last
}

// deployUsage is the total of GET /deploy/{id}/usage the tests read.
type deployUsage struct {
	GPUSeconds        float64 `json:"gpu_seconds"`
	NeverReadySeconds float64 `json:"never_ready_seconds"`
	LoadingSeconds    float64 `json:"loading_seconds"`
	CostUSD           float64 `json:"cost_usd"`
}

func (u deployUsage) String() string {
	b, _ := json.Marshal(u)
	return string(b)
}

// deploymentUsage is the total of GET /deploy/{id}/usage since from.
func deploymentUsage(t *testing.T, s *server, id string, from time.Time) deployUsage {
	t.Helper()
	rep, err := s.api().Usage(context.Background(), client.UsageQuery{DeployID: id, From: from})
	if err != nil {
		t.Fatalf("GET /deploy/%s/usage: %v", id, err)
	}
	return deployUsage{rep.Total.GPUSeconds, rep.Total.NeverReadySeconds, rep.Total.LoadingSeconds, rep.Total.CostUSD}
}
