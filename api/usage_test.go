package api

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/thawhq/thaw/auth"
	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/internal/metertest"
	"github.com/thawhq/thaw/meter"
	"github.com/thawhq/thaw/spend"
)

// meterNow is the metered harness's "now": Wednesday 18 November 2026,
// 12:00 UTC. This month began on Sunday 1 November, this billing week on
// Monday 16 November.
var meterNow = time.Date(2026, 11, 18, 12, 0, 0, 0, time.UTC)

// testPrices are the harness's prices, USD per GPU-hour.
var testPrices = meter.Prices{"A100-80GB": 1.5, "H100-80GB": 2.4}

// fakeBlocker blocks the users in blocked, with their message.
type fakeBlocker struct {
	mu      sync.Mutex // mu guards blocked.
	blocked map[string]string
}

func (f *fakeBlocker) Blocked(owner string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	msg, ok := f.blocked[owner]
	return msg, ok
}

// meterHarness serves the deploy, usage and account APIs over a real
// ledger (SQLite in a temporary directory), at a fixed now.
type meterHarness struct {
	*harness
	ledger  *meter.Store
	blocker *fakeBlocker
}

// meterConfig is what a test changes of the metered harness.
type meterConfig struct {
	prices meter.Prices // default testPrices
	policy spend.Policy
}

func newMeterHarness(t *testing.T, mc meterConfig) *meterHarness {
	t.Helper()
	if mc.prices == nil {
		mc.prices = testPrices
	}
	store, ledger := metertest.Open(t)
	now := func() time.Time { return meterNow }
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	blocker := &fakeBlocker{blocked: map[string]string{}}
	live := &fakeLive{byID: map[string]deploy.Live{}}

	deployAPI, err := New(Config{Store: store, Live: live, Now: now, Logger: logger,
		Ledger: ledger, Prices: mc.prices, Policy: mc.policy, Blocker: blocker})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	deployAPI.Register(mux, auth.NewUsers(map[string]string{"alice": "tok-alice", "bob": "tok-bob"}).Require)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &meterHarness{
		harness: &harness{t: t, srv: srv, store: store, live: live},
		ledger:  ledger, blocker: blocker,
	}
}

// at is a time in November 2026 (or, for a day above 18, October), UTC.
func at(month time.Month, day, hour, min int) time.Time {
	return time.Date(2026, month, day, hour, min, 0, 0, time.UTC)
}

// run records one instance's facts: held at start, ready at ready (unless
// zero), released at end (unless zero: still running).
func (h *meterHarness) run(d deploy.View, instance string, start, ready, end time.Time) {
	h.t.Helper()
	ctx := context.Background()
	f := meter.Fact{InstanceID: instance, DeployID: d.ID, Owner: strings.SplitN(d.FullName, "/", 2)[0],
		Model: d.FullName, GPU: d.Config.GPU, NumGPUs: d.Config.NumGPUs}
	for _, k := range []struct {
		kind meter.Kind
		at   time.Time
	}{{meter.KindHeld, start}, {meter.KindReady, ready}, {meter.KindReleased, end}} {
		if k.at.IsZero() {
			continue
		}
		f.Kind, f.At = k.kind, k.at
		if k.kind == meter.KindReleased {
			f.Reason = "stopped"
		}
		if err := h.ledger.Record(ctx, f); err != nil {
			h.t.Fatal(err)
		}
	}
}

func (h *meterHarness) tokens(d deploy.View, hour time.Time, requests, prompt, completion int64) {
	h.t.Helper()
	err := h.ledger.AddTokens(context.Background(), meter.Tokens{DeployID: d.ID, Owner: strings.SplitN(d.FullName, "/", 2)[0],
		Hour: hour, Requests: requests, PromptTokens: prompt, CompletionTokens: completion})
	if err != nil {
		h.t.Fatal(err)
	}
}

// deployment creates user's deployment model on gpus x gpu.
func (h *meterHarness) deployment(user, model, gpu string, gpus int) deploy.View {
	h.t.Helper()
	body := createBody(model)
	body["gpu"], body["num_gpus"] = gpu, gpus
	return h.do(user, http.MethodPost, "/deploy/llm", body).view(h.t)
}

// history is the ledger every usage test starts from, at meterNow.
type history struct {
	a, b, bobs deploy.View
}

// seed records:
//   - alice's a (2 x A100-80GB, 1.5 USD/GPU-hour, 3 USD an hour):
//     Fri 30 Oct 22:00 - Sun 1 Nov 02:00 (ready 22:10, across the month's
//     start: 2 h of it this month); Tue 10 Nov 08:00 - 09:00 (ready 08:15);
//     Tue 17 Nov 10:00 - 12:00 (ready 10:06), with 5 requests, 100 prompt
//     and 200 completion tokens in its first hour; and since Wed 18 Nov
//     11:00 (ready 11:30), still running;
//   - alice's b (1 x H100-80GB, 2.4 USD an hour): Wed 18 Nov 09:00 - 10:00,
//     never ready;
//   - bob's (1 x A100-80GB): Tue 17 Nov 00:00 - 10:00, with 7 requests.
func (h *meterHarness) seed() history {
	h.t.Helper()
	hs := history{
		a:    h.deployment("alice", "a", "A100-80GB", 2),
		b:    h.deployment("alice", "b", "H100-80GB", 1),
		bobs: h.deployment("bob", "c", "A100-80GB", 1),
	}
	h.run(hs.a, "a-1", at(10, 30, 22, 0), at(10, 30, 22, 10), at(11, 1, 2, 0))
	h.run(hs.a, "a-2", at(11, 10, 8, 0), at(11, 10, 8, 15), at(11, 10, 9, 0))
	h.run(hs.a, "a-3", at(11, 17, 10, 0), at(11, 17, 10, 6), at(11, 17, 12, 0))
	h.run(hs.a, "a-4", at(11, 18, 11, 0), at(11, 18, 11, 30), time.Time{})
	h.tokens(hs.a, at(11, 17, 10, 0), 5, 100, 200)
	h.run(hs.b, "b-1", at(11, 18, 9, 0), time.Time{}, at(11, 18, 10, 0))
	h.run(hs.bobs, "c-1", at(11, 17, 0, 0), at(11, 17, 0, 1), at(11, 17, 10, 0))
	h.tokens(hs.bobs, at(11, 17, 3, 0), 7, 70, 70)
	return hs
}

// report decodes a usage report, failing unless status is 200.
func (r response) report(t *testing.T) meter.Report {
	t.Helper()
	return decodeOK[meter.Report](t, r)
}

func tp(t time.Time) *time.Time { return &t }

// monthTotal is the seeded history's usage from 1 November to meterNow,
// however it is grouped.
var monthTotal = meter.Item{GPUSeconds: 46800, LoadingSeconds: 9720, NeverReadySeconds: 3600, CostUSD: 20.4, Requests: 5, PromptTokens: 100, CompletionTokens: 200}

// TestUsageDefaultWindow: GET /usage is this month so far, per deployment,
// the running instance counted up to now, loading time apart; another
// user's usage is not in it.
func TestUsageDefaultWindow(t *testing.T) {
	h := newMeterHarness(t, meterConfig{})
	hs := h.seed()
	// a: 2 h + 1 h + 2 h + 1 h so far, on 2 GPUs = 43200 GPU-seconds, 18
	// USD; loading 15 + 6 + 30 minutes on 2 GPUs (a-1 was ready before the
	// month). b: 1 h, all of it loading, 2.40 USD.
	want := meter.Report{
		From: at(11, 1, 0, 0), To: meterNow,
		Items: []meter.Item{
			{DeployID: hs.a.ID, Model: "alice/a", GPU: "A100-80GB", NumGPUs: 2, GPUSeconds: 43200, LoadingSeconds: 6120,
				CostUSD: 18, Requests: 5, PromptTokens: 100, CompletionTokens: 200},
			{DeployID: hs.b.ID, Model: "alice/b", GPU: "H100-80GB", NumGPUs: 1, GPUSeconds: 3600, LoadingSeconds: 3600, NeverReadySeconds: 3600, CostUSD: 2.4},
		},
		Total: monthTotal,
	}
	if hs.b.ID < hs.a.ID {
		want.Items[0], want.Items[1] = want.Items[1], want.Items[0]
	}
	if diff := cmp.Diff(want, h.do("alice", http.MethodGet, "/usage", nil).report(t)); diff != "" {
		t.Errorf("alice's GET /usage (-want +got):\n%s", diff)
	}
	bob := h.do("bob", http.MethodGet, "/usage", nil).report(t)
	wantBob := meter.Report{
		From: at(11, 1, 0, 0), To: meterNow,
		Items: []meter.Item{{DeployID: hs.bobs.ID, Model: "bob/c", GPU: "A100-80GB", NumGPUs: 1, GPUSeconds: 36000,
			LoadingSeconds: 60, CostUSD: 15, Requests: 7, PromptTokens: 70, CompletionTokens: 70}},
		Total: meter.Item{GPUSeconds: 36000, LoadingSeconds: 60, CostUSD: 15, Requests: 7, PromptTokens: 70, CompletionTokens: 70},
	}
	if diff := cmp.Diff(wantBob, bob); diff != "" {
		t.Errorf("bob's GET /usage (-want +got):\n%s", diff)
	}
	if r := h.do("", http.MethodGet, "/usage", nil); r.status != http.StatusUnauthorized {
		t.Errorf("GET /usage without a token: status %d, want 401", r.status)
	}
}

func TestUsageEmpty(t *testing.T) {
	h := newMeterHarness(t, meterConfig{})
	r := h.do("alice", http.MethodGet, "/usage", nil)
	if r.status != http.StatusOK || !bytes.Contains(r.body, []byte(`"items": []`)) {
		t.Errorf("GET /usage with no usage: %d %s, want 200 and an empty items array", r.status, r.body)
	}
}

// TestUsageWindowAndGroups: ?from= and ?to= clip the intervals; group_by
// buckets them by GPU type, UTC day or billing week.
func TestUsageWindowAndGroups(t *testing.T) {
	h := newMeterHarness(t, meterConfig{})
	hs := h.seed()
	var (
		nov1  = at(11, 1, 0, 0)
		oct26 = at(10, 26, 0, 0) // the Monday of 1 November's week
		nov9  = at(11, 9, 0, 0)
		nov16 = at(11, 16, 0, 0)
	)
	tests := []struct {
		name, query string
		want        meter.Report
	}{{
		name:  "one day, a's second run partly",
		query: "?from=2026-11-17T00:00:00Z&to=2026-11-17T11:00:00Z",
		want: meter.Report{From: at(11, 17, 0, 0), To: at(11, 17, 11, 0),
			Items: []meter.Item{{DeployID: hs.a.ID, Model: "alice/a", GPU: "A100-80GB", NumGPUs: 2, GPUSeconds: 7200,
				LoadingSeconds: 720, CostUSD: 3, Requests: 5, PromptTokens: 100, CompletionTokens: 200}},
			Total: meter.Item{GPUSeconds: 7200, LoadingSeconds: 720, CostUSD: 3, Requests: 5, PromptTokens: 100, CompletionTokens: 200}},
	}, {
		name:  "offsets are read as UTC",
		query: "?from=2026-11-18T10:30:00%2B01:00&to=2026-11-18T14:00:00%2B02:00",
		want: meter.Report{From: at(11, 18, 9, 30), To: at(11, 18, 12, 0),
			Items: sortedByID(
				meter.Item{DeployID: hs.a.ID, Model: "alice/a", GPU: "A100-80GB", NumGPUs: 2, GPUSeconds: 7200, LoadingSeconds: 3600, CostUSD: 3},
				meter.Item{DeployID: hs.b.ID, Model: "alice/b", GPU: "H100-80GB", NumGPUs: 1, GPUSeconds: 1800, LoadingSeconds: 1800, NeverReadySeconds: 1800, CostUSD: 1.2}),
			Total: meter.Item{GPUSeconds: 9000, LoadingSeconds: 5400, NeverReadySeconds: 1800, CostUSD: 4.2}},
	}, {
		name:  "by gpu",
		query: "?group_by=gpu",
		want: meter.Report{From: nov1, To: meterNow,
			Items: []meter.Item{
				{GPU: "A100-80GB", GPUSeconds: 43200, LoadingSeconds: 6120, CostUSD: 18, Requests: 5, PromptTokens: 100, CompletionTokens: 200},
				{GPU: "H100-80GB", GPUSeconds: 3600, LoadingSeconds: 3600, NeverReadySeconds: 3600, CostUSD: 2.4},
			},
			Total: monthTotal},
	}, {
		name:  "by day",
		query: "?group_by=day",
		want: meter.Report{From: nov1, To: meterNow,
			Items: []meter.Item{
				{Start: tp(nov1), GPUSeconds: 14400, CostUSD: 6},
				{Start: tp(at(11, 10, 0, 0)), GPUSeconds: 7200, LoadingSeconds: 1800, CostUSD: 3},
				{Start: tp(at(11, 17, 0, 0)), GPUSeconds: 14400, LoadingSeconds: 720, CostUSD: 6, Requests: 5, PromptTokens: 100, CompletionTokens: 200},
				{Start: tp(at(11, 18, 0, 0)), GPUSeconds: 10800, LoadingSeconds: 7200, NeverReadySeconds: 3600, CostUSD: 5.4},
			},
			Total: monthTotal},
	}, {
		name:  "by week",
		query: "?group_by=week",
		want: meter.Report{From: nov1, To: meterNow,
			Items: []meter.Item{
				{Start: tp(oct26), GPUSeconds: 14400, CostUSD: 6},
				{Start: tp(nov9), GPUSeconds: 7200, LoadingSeconds: 1800, CostUSD: 3},
				{Start: tp(nov16), GPUSeconds: 25200, LoadingSeconds: 7920, NeverReadySeconds: 3600, CostUSD: 11.4, Requests: 5, PromptTokens: 100, CompletionTokens: 200},
			},
			Total: monthTotal},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := h.do("alice", http.MethodGet, "/usage"+tt.query, nil).report(t)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("GET /usage%s (-want +got):\n%s", tt.query, diff)
			}
		})
	}
}

func sortedByID(items ...meter.Item) []meter.Item {
	if len(items) == 2 && items[1].DeployID < items[0].DeployID {
		items[0], items[1] = items[1], items[0]
	}
	return items
}

// TestUsageBadQueries: a malformed time, an empty window or an unknown
// grouping is 400, naming the parameter; the same checks apply to one
// deployment's usage and to the statements.
func TestUsageBadQueries(t *testing.T) {
	h := newMeterHarness(t, meterConfig{})
	hs := h.seed()
	tests := []struct {
		query, code, param, msg string
	}{
		{"?from=yesterday", "invalid_time", "from", `from="yesterday" is not an RFC 3339 time, e.g. 2026-11-02T00:00:00Z`},
		{"?from=2026-11-01", "invalid_time", "from", `from="2026-11-01" is not an RFC 3339 time`},
		{"?to=2026-11-31T00:00:00Z", "invalid_time", "to", `to="2026-11-31T00:00:00Z" is not an RFC 3339 time`},
		{"?from=2026-11-10T00:00:00Z&to=2026-11-09T00:00:00Z", "invalid_window", "from", "from must be before to"},
		{"?from=2026-11-10T00:00:00Z&to=2026-11-10T00:00:00Z", "invalid_window", "from", "from must be before to"},
		{"?from=2026-12-01T00:00:00Z", "invalid_window", "from", "from must be before to"}, // after now, the default to
		{"?group_by=month", "invalid_group_by", "group_by", `unknown group_by "month", want one of deployment, gpu, day, week`},
		{"?group_by=GPU", "invalid_group_by", "group_by", `unknown group_by "GPU"`},
	}
	for _, tt := range tests {
		for _, path := range []string{"/usage", "/deploy/" + hs.a.ID + "/usage", "/usage/invoices"} {
			if path == "/usage/invoices" && tt.param == "group_by" {
				continue
			}
			t.Run(path+tt.query, func(t *testing.T) {
				e := h.do("alice", http.MethodGet, path+tt.query, nil).err(t)
				if e.Status != http.StatusBadRequest || e.Code != tt.code || e.Param == nil || *e.Param != tt.param ||
					!strings.Contains(e.Message, tt.msg) {
					t.Errorf("got %d %s param %v: %q; want 400 %s param %s: %q", e.Status, e.Code, deref(e.Param), e.Message, tt.code, tt.param, tt.msg)
				}
			})
		}
	}
}

func deref(s *string) string {
	if s == nil {
		return "<null>"
	}
	return *s
}

// TestDeployUsage: GET /deploy/{id}/usage is one deployment's report; a
// deployment of someone else's, or none, is 404; a deleted one's usage
// stays readable by its owner, and only by them.
func TestDeployUsage(t *testing.T) {
	h := newMeterHarness(t, meterConfig{})
	hs := h.seed()
	wantA := meter.Report{From: at(11, 1, 0, 0), To: meterNow,
		Items: []meter.Item{{DeployID: hs.a.ID, Model: "alice/a", GPU: "A100-80GB", NumGPUs: 2, GPUSeconds: 43200, LoadingSeconds: 6120,
			CostUSD: 18, Requests: 5, PromptTokens: 100, CompletionTokens: 200}},
		Total: meter.Item{GPUSeconds: 43200, LoadingSeconds: 6120, CostUSD: 18, Requests: 5, PromptTokens: 100, CompletionTokens: 200}}
	path := "/deploy/" + hs.a.ID + "/usage"
	if diff := cmp.Diff(wantA, h.do("alice", http.MethodGet, path, nil).report(t)); diff != "" {
		t.Errorf("GET %s (-want +got):\n%s", path, diff)
	}
	notFound := func(user, id string) {
		t.Helper()
		e := h.do(user, http.MethodGet, "/deploy/"+id+"/usage", nil).err(t)
		if e.Status != http.StatusNotFound || e.Code != "deployment_not_found" || e.Message != `deployment "`+id+`" not found` {
			t.Errorf("%s: GET /deploy/%s/usage = %+v, want 404 deployment_not_found", user, id, e)
		}
	}
	notFound("bob", hs.a.ID)
	notFound("alice", hs.bobs.ID)
	notFound("alice", "no-such-deployment")

	if r := h.do("alice", http.MethodDelete, "/deploy/"+hs.a.ID, nil); r.status != http.StatusOK {
		t.Fatalf("DELETE: %d %s", r.status, r.body)
	}
	if diff := cmp.Diff(wantA, h.do("alice", http.MethodGet, path, nil).report(t)); diff != "" {
		t.Errorf("GET %s after the deployment was deleted (-want +got):\n%s", path, diff)
	}
	notFound("bob", hs.a.ID)
	// A deleted deployment's usage from before the window is still its
	// owner's: an empty report, not 404.
	got := h.do("alice", http.MethodGet, path+"?from=2026-11-18T11:30:00Z&to=2026-11-18T11:45:00Z", nil).report(t)
	if got.Total.GPUSeconds != 1800 {
		t.Errorf("a in 11:30-11:45: %v GPU-seconds, want 1800", got.Total.GPUSeconds)
	}
	got = h.do("alice", http.MethodGet, path+"?from=2026-09-01T00:00:00Z&to=2026-10-01T00:00:00Z", nil).report(t)
	if len(got.Items) != 0 || got.Total.GPUSeconds != 0 {
		t.Errorf("a in September: %+v, want an empty report", got)
	}
}

// TestInvoices: the weekly statements as JSON and as CSV say the same:
// one line per deployment and GPU type, weeks Monday to Monday, the week
// holding now not final, and the CSV's amounts sum to the JSON's totals.
func TestInvoices(t *testing.T) {
	h := newMeterHarness(t, meterConfig{})
	hs := h.seed()
	r := h.do("alice", http.MethodGet, "/usage/invoices", nil)
	if r.status != http.StatusOK || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
		t.Fatalf("GET /usage/invoices: %d %s %s", r.status, r.header.Get("Content-Type"), r.body)
	}
	var got InvoicesView
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatal(err)
	}
	line := func(d deploy.View, hours, rate, amount float64) meter.Line {
		return meter.Line{DeployID: d.ID, Model: d.FullName, GPU: d.Config.GPU, GPUHours: hours, RateUSD: rate, AmountUSD: amount}
	}
	want := InvoicesView{
		From: at(10, 19, 0, 0), To: meterNow, // four weeks before this one
		Statements: []meter.Statement{
			// a-1 ran 28 hours on 2 GPUs in the week of 26 October.
			{Start: at(10, 26, 0, 0), End: at(11, 2, 0, 0), Lines: []meter.Line{line(hs.a, 56, 1.5, 84)}, TotalUSD: 84, Final: true},
			{Start: at(11, 9, 0, 0), End: at(11, 16, 0, 0), Lines: []meter.Line{line(hs.a, 2, 1.5, 3)}, TotalUSD: 3, Final: true},
			{Start: at(11, 16, 0, 0), End: at(11, 23, 0, 0), TotalUSD: 11.4,
				Lines: sortedLines(line(hs.a, 6, 1.5, 9), line(hs.b, 1, 2.4, 2.4))},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GET /usage/invoices (-want +got):\n%s", diff)
	}

	req, err := http.NewRequest(http.MethodGet, h.srv.URL+"/usage/invoices", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer tok-alice")
	req.Header.Set("Accept", "text/csv")
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/csv") {
		t.Fatalf("CSV: status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	rows, err := csv.NewReader(resp.Body).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	wantHeader := []string{"week_start", "week_end", "final", "deploy_id", "model", "gpu", "gpu_hours", "rate_usd", "amount_usd"}
	if len(rows) != 1+4 || !cmp.Equal(wantHeader, rows[0]) {
		t.Fatalf("CSV: want a header and 4 lines, got %q", rows)
	}
	if diff := cmp.Diff([]string{"2026-10-26", "2026-11-02", "true", hs.a.ID, "alice/a", "A100-80GB", "56.000000", "1.5", "84.00"}, rows[1]); diff != "" {
		t.Errorf("CSV first line (-want +got):\n%s", diff)
	}
	cents := map[string]int64{} // week start -> sum of amount_usd, in cents
	for _, row := range rows[1:] {
		v, err := strconv.ParseFloat(row[8], 64)
		if err != nil {
			t.Fatalf("CSV amount %q: %v", row[8], err)
		}
		cents[row[0]] += int64(v*100 + 0.5)
	}
	for _, st := range got.Statements {
		week := st.Start.Format(time.DateOnly)
		if want := int64(st.TotalUSD*100 + 0.5); cents[week] != want {
			t.Errorf("week %s: CSV amounts sum to %d cents, JSON total is %d", week, cents[week], want)
		}
	}

	// Bob's statements are his own.
	var bob InvoicesView
	if err := json.Unmarshal(h.do("bob", http.MethodGet, "/usage/invoices?from=2026-11-17T00:00:00Z", nil).body, &bob); err != nil {
		t.Fatal(err)
	}
	if len(bob.Statements) != 1 || bob.Statements[0].TotalUSD != 15 || bob.Statements[0].Lines[0].DeployID != hs.bobs.ID ||
		!bob.From.Equal(at(11, 16, 0, 0)) {
		t.Errorf("bob's statements from Tuesday: %+v, want the week from Monday 16 November, 15 USD", bob)
	}
}

func sortedLines(ls ...meter.Line) []meter.Line {
	if ls[1].DeployID < ls[0].DeployID {
		ls[0], ls[1] = ls[1], ls[0]
	}
	return ls
}

// TestUnpricedUsage: GPU time on a type the operator's price table lacks
// is 503 unpriced_usage, never a guess, in reports, statements and the
// account; a window without it is priced as usual.
func TestUnpricedUsage(t *testing.T) {
	h := newMeterHarness(t, meterConfig{prices: meter.Prices{"A100-80GB": 1.5}})
	h.seed()
	for _, path := range []string{"/usage", "/usage?group_by=day", "/usage/invoices", "/account"} {
		e := h.do("alice", http.MethodGet, path, nil).err(t)
		if e.Status != http.StatusServiceUnavailable || e.Code != "unpriced_usage" || !strings.Contains(e.Message, `"H100-80GB"`) {
			t.Errorf("GET %s: %+v, want 503 unpriced_usage naming H100-80GB", path, e)
		}
	}
	rep := h.do("alice", http.MethodGet, "/usage?from=2026-11-17T00:00:00Z&to=2026-11-18T00:00:00Z", nil).report(t)
	if rep.Total.CostUSD != 6 {
		t.Errorf("a window with A100 time only: cost %v, want 6", rep.Total.CostUSD)
	}
}
