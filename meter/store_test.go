package meter_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/thawhq/thaw/meter"
	_ "github.com/thawhq/thaw/meter/drivers"
	"github.com/thawhq/thaw/test/e2e"
)

// storeCase is one store test, run against the database at url.
type storeCase struct {
	name string
	run  func(t *testing.T, url string)
}

// runOnDatabases runs each case on SQLite (a file in a temporary
// directory) and on a real PostgreSQL (a throw-away cluster; missing, it
// skips outside CI and fails in CI). Each case gets an empty database;
// PostgreSQL's are named prefix_<n>.
func runOnDatabases(t *testing.T, prefix string, cases []storeCase) {
	t.Run("sqlite", func(t *testing.T) {
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				c.run(t, "sqlite:"+filepath.Join(t.TempDir(), "meter.db"))
			})
		}
	})
	t.Run("postgres", func(t *testing.T) {
		admin := e2e.StartPostgres(t)
		for i, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				c.run(t, newDatabase(t, admin, fmt.Sprintf("%s_%d", prefix, i)))
			})
		}
	})
}

// TestStore runs the store suite on each database.
func TestStore(t *testing.T) {
	runOnDatabases(t, "meter", []storeCase{
		{"migrations", testMigrations},
		{"intervals", testIntervals},
		{"restart re-report counted once", testRestart},
		{"refused facts", testRefused},
		{"concurrent record", testConcurrentRecord},
		{"tokens", testTokens},
		{"accounts", testAccounts},
	})
}

// newDatabase creates database name on the cluster of adminURL and returns
// its URL.
func newDatabase(t *testing.T, adminURL, name string) string {
	t.Helper()
	db := rawDB(t, adminURL)
	if _, err := db.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatal(err)
	}
	return strings.Replace(adminURL, "/postgres?", "/"+name+"?", 1)
}

// rawDB opens url with database/sql directly, to look under the store.
func rawDB(t *testing.T, url string) *sql.DB {
	t.Helper()
	var db *sql.DB
	var err error
	if path, ok := strings.CutPrefix(url, "sqlite:"); ok {
		db, err = sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	} else {
		db, err = sql.Open("pgx", url)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func open(t *testing.T, url string) *meter.Store {
	t.Helper()
	s, err := meter.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// t0 is a time with microseconds, the ledger's precision.
var t0 = time.Date(2026, 3, 2, 10, 0, 0, 123456000, time.UTC)

func held(id, deploy, owner string, at time.Time) meter.Fact {
	return meter.Fact{InstanceID: id, DeployID: deploy, Owner: owner, Model: owner + "/m-" + deploy, GPU: "A100-80GB", NumGPUs: 2, Kind: meter.KindHeld, At: at}
}

func fact(id string, k meter.Kind, at time.Time, reason string) meter.Fact {
	return meter.Fact{InstanceID: id, Kind: k, At: at, Reason: reason}
}

func record(t *testing.T, s *meter.Store, fs ...meter.Fact) {
	t.Helper()
	for _, f := range fs {
		if err := s.Record(context.Background(), f); err != nil {
			t.Fatalf("Record(%s %s): %v", f.InstanceID, f.Kind, err)
		}
	}
}

func testMigrations(t *testing.T, url string) {
	ctx := context.Background()
	for range 2 { // the second Open is a no-op
		s, err := meter.Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
	db := rawDB(t, url)
	var n, v int
	if err := db.QueryRow("SELECT COUNT(*), MAX(version) FROM schema_migrations").Scan(&n, &v); err != nil {
		t.Fatal(err)
	}
	if n != meter.SchemaVersion() || v != meter.SchemaVersion() {
		t.Errorf("schema_migrations: %d rows up to version %d after two opens; want %d", n, v, meter.SchemaVersion())
	}
	newer := meter.SchemaVersion() + 1
	if _, err := db.Exec(fmt.Sprintf("INSERT INTO schema_migrations (version, name, applied_us) VALUES (%d, 'from_the_future', 0)", newer)); err != nil {
		t.Fatal(err)
	}
	_, err := meter.Open(ctx, url)
	if !errors.Is(err, meter.ErrSchemaNewer) || !strings.Contains(err.Error(), fmt.Sprint(newer)) {
		t.Errorf("Open of a version %d schema: err = %v, want ErrSchemaNewer naming the version", newer, err)
	}
}

func testIntervals(t *testing.T, url string) {
	ctx := context.Background()
	s := open(t, url)
	record(t, s,
		held("a1", "d1", "alice", t0), fact("a1", meter.KindReady, t0.Add(90*time.Second), ""),
		fact("a1", meter.KindReleased, t0.Add(time.Hour), "stopped"),
		held("a2", "d1", "alice", t0.Add(2*time.Hour)), // open, never ready
		held("b1", "d2", "bob", t0.Add(30*time.Minute)), fact("b1", meter.KindReleased, t0.Add(40*time.Minute), "failed: exit 1"),
	)
	a1 := meter.Interval{InstanceID: "a1", DeployID: "d1", Owner: "alice", Model: "alice/m-d1", GPU: "A100-80GB", NumGPUs: 2,
		Start: t0, Ready: t0.Add(90 * time.Second), End: t0.Add(time.Hour), EndReason: "stopped"}
	a2 := meter.Interval{InstanceID: "a2", DeployID: "d1", Owner: "alice", Model: "alice/m-d1", GPU: "A100-80GB", NumGPUs: 2, Start: t0.Add(2 * time.Hour)}
	b1 := meter.Interval{InstanceID: "b1", DeployID: "d2", Owner: "bob", Model: "bob/m-d2", GPU: "A100-80GB", NumGPUs: 2,
		Start: t0.Add(30 * time.Minute), End: t0.Add(40 * time.Minute), EndReason: "failed: exit 1"}
	for _, tc := range []struct {
		name     string
		owner    string
		from, to time.Time
		want     []meter.Interval
	}{
		{"everyone, all time", "", t0.Add(-time.Hour), t0.Add(10 * time.Hour), []meter.Interval{a1, b1, a2}},
		{"one owner", "alice", t0.Add(-time.Hour), t0.Add(10 * time.Hour), []meter.Interval{a1, a2}},
		{"the open one after the others ended", "", t0.Add(time.Hour), t0.Add(100 * time.Hour), []meter.Interval{a2}},
		{"before the open one started", "", t0.Add(35 * time.Minute), t0.Add(2 * time.Hour), []meter.Interval{a1, b1}},
		{"nothing yet", "", t0.Add(-2 * time.Hour), t0, nil},
	} {
		got, err := s.Intervals(ctx, tc.owner, tc.from, tc.to)
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(tc.want, got); d != "" {
			t.Errorf("%s: intervals (-want +got):\n%s", tc.name, d)
		}
	}
	open, err := s.OpenIntervals(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]meter.Interval{a2}, open); d != "" {
		t.Errorf("open intervals (-want +got):\n%s", d)
	}
}

// testRestart: thaw restarts mid-run (a new Store on the same database)
// and the runtime re-reports the instance it still runs, with the times of
// its own record; a second replica reports it too. The instance is counted
// once, from its first held fact to its release, with no gap.
func testRestart(t *testing.T, url string) {
	ctx := context.Background()
	before := open(t, url)
	record(t, before, held("i1", "d1", "alice", t0), fact("i1", meter.KindReady, t0.Add(time.Minute), ""))
	before.Close()

	after := open(t, url)
	replica := open(t, url)
	record(t, after, held("i1", "d1", "alice", t0), fact("i1", meter.KindReady, t0.Add(time.Minute), ""))
	// A stale report with other times adds nothing either: the first wins.
	record(t, replica, held("i1", "d1", "alice", t0.Add(5*time.Minute)), fact("i1", meter.KindReady, t0.Add(6*time.Minute), ""))
	end := t0.Add(3 * time.Hour)
	record(t, after, fact("i1", meter.KindReleased, end, "stopped"))
	record(t, replica, fact("i1", meter.KindReleased, end.Add(time.Second), "stopped"))

	ivs, err := after.Intervals(ctx, "", t0.Add(-time.Hour), end.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(ivs) != 1 || !ivs[0].Start.Equal(t0) || !ivs[0].Ready.Equal(t0.Add(time.Minute)) || !ivs[0].End.Equal(end) {
		t.Fatalf("intervals after restart and re-reports: %+v; want one, %s to %s", ivs, t0, end)
	}
	r, err := meter.Summarize(ivs, nil, t0.Add(-time.Hour), end.Add(time.Hour), end.Add(time.Hour), "", meter.DefaultPrices())
	if err != nil {
		t.Fatal(err)
	}
	if want := 2 * 3 * 3600.0; r.Total.GPUSeconds != want || r.Total.LoadingSeconds != 2*60 {
		t.Errorf("GPU-seconds %v (loading %v), want %v (loading 120): counted once, no gap", r.Total.GPUSeconds, r.Total.LoadingSeconds, want)
	}
}

func testRefused(t *testing.T, url string) {
	s := open(t, url)
	ctx := context.Background()
	err := s.Record(ctx, fact("ghost", meter.KindReleased, t0, "stopped"))
	if !errors.Is(err, meter.ErrNoHeld) || !strings.Contains(err.Error(), "ghost") {
		t.Errorf("released for an unknown instance: err = %v, want ErrNoHeld naming it", err)
	}
	if err := s.Record(ctx, fact("ghost", meter.KindReady, t0, "")); !errors.Is(err, meter.ErrNoHeld) {
		t.Errorf("ready for an unknown instance: err = %v, want ErrNoHeld", err)
	}
	record(t, s, held("i1", "d1", "alice", t0))
	if err := s.Record(ctx, fact("i1", meter.KindReleased, t0.Add(-time.Second), "stopped")); !errors.Is(err, meter.ErrBeforeHeld) {
		t.Errorf("released before held: err = %v, want ErrBeforeHeld", err)
	}
	for _, f := range []meter.Fact{
		{Kind: meter.KindHeld, At: t0, DeployID: "d", Owner: "o", GPU: "A100-80GB", NumGPUs: 1},
		{InstanceID: "x", Kind: "paused", At: t0},
		{InstanceID: "x", Kind: meter.KindHeld, DeployID: "d", Owner: "o", GPU: "A100-80GB", NumGPUs: 1},
		{InstanceID: "x", Kind: meter.KindHeld, At: t0, DeployID: "d", Owner: "o", GPU: "A100-80GB"},
		{InstanceID: "x", Kind: meter.KindHeld, At: t0, Owner: "o", GPU: "A100-80GB", NumGPUs: 1},
	} {
		if err := s.Record(ctx, f); !errors.Is(err, meter.ErrInvalidFact) {
			t.Errorf("Record(%+v): err = %v, want ErrInvalidFact", f, err)
		}
	}
	ivs, err := s.Intervals(ctx, "", t0.Add(-time.Hour), t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(ivs) != 1 || !ivs[0].End.IsZero() {
		t.Errorf("after refused facts: %+v; want i1 alone, still open", ivs)
	}
}

// testConcurrentRecord: two replicas (two stores, two connection pools)
// record the same facts at the same moment; every Record succeeds and each
// fact is one row.
func testConcurrentRecord(t *testing.T, url string) {
	ctx := context.Background()
	a, b := open(t, url), open(t, url)
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, 4*n)
	for i := range n {
		id := fmt.Sprintf("i%02d", i)
		for _, s := range []*meter.Store{a, b} {
			wg.Go(func() {
				if err := s.Record(ctx, held(id, "d1", "alice", t0)); err != nil {
					errs <- err
					return
				}
				if err := s.Record(ctx, fact(id, meter.KindReleased, t0.Add(time.Hour), "stopped")); err != nil {
					errs <- err
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var rows int
	if err := rawDB(t, url).QueryRow("SELECT COUNT(*) FROM facts").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 2*n {
		t.Errorf("%d fact rows, want %d (held and released of %d instances)", rows, 2*n, n)
	}
	ivs, err := a.Intervals(ctx, "", t0, t0.Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(ivs) != n {
		t.Errorf("%d intervals, want %d", len(ivs), n)
	}
}

func testTokens(t *testing.T, url string) {
	ctx := context.Background()
	s := open(t, url)
	h := t0.Truncate(time.Hour)
	for _, tk := range []meter.Tokens{
		{DeployID: "d1", Owner: "alice", Hour: h.Add(5 * time.Minute), Requests: 1, PromptTokens: 10, CompletionTokens: 100},
		{DeployID: "d1", Owner: "alice", Hour: h.Add(59 * time.Minute), Requests: 2, PromptTokens: 20, CompletionTokens: 200},
		{DeployID: "d1", Owner: "alice", Hour: h.Add(time.Hour), Requests: 4, PromptTokens: 40, CompletionTokens: 400},
		{DeployID: "d2", Owner: "bob", Hour: h, Requests: 8},
	} {
		if err := s.AddTokens(ctx, tk); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Tokens(ctx, "alice", h, h.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := []meter.Tokens{
		{DeployID: "d1", Owner: "alice", Hour: h, Requests: 3, PromptTokens: 30, CompletionTokens: 300},
		{DeployID: "d1", Owner: "alice", Hour: h.Add(time.Hour), Requests: 4, PromptTokens: 40, CompletionTokens: 400},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("alice's tokens (-want +got):\n%s", d)
	}
	got, err = s.Tokens(ctx, "", h, h.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].DeployID != "d1" || got[1].DeployID != "d2" {
		t.Errorf("everyone's first hour: %+v; want d1 and d2", got)
	}
	if err := s.AddTokens(ctx, meter.Tokens{DeployID: "d1", Hour: h, Requests: -1}); err == nil {
		t.Error("a negative count was added")
	}
}

func testAccounts(t *testing.T, url string) {
	ctx := context.Background()
	s := open(t, url)
	a, err := s.Account(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(meter.Account{Owner: "alice"}, a); d != "" {
		t.Errorf("missing account (-want +got):\n%s", d)
	}
	month := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	want := meter.Account{Owner: "alice", SpendingLimitUSD: 12.5, WebhookURL: "http://127.0.0.1:9/hook", WebhookSecret: "s"}
	if err := s.PutAccount(ctx, want); err != nil {
		t.Fatal(err)
	}
	mark := func(th int, m time.Time, wantWon bool) {
		t.Helper()
		won, err := s.MarkNotified(ctx, "alice", m, th)
		if err != nil || won != wantWon {
			t.Fatalf("MarkNotified(%d, %s) = %v, %v; want %v", th, m.Format("2006-01"), won, err, wantWon)
		}
	}
	mark(50, month, true)
	mark(50, month, false) // already told: another replica must not announce it again
	mark(80, month, true)
	mark(50, month, false)
	want.Notified, want.NotifiedMonth = 80, month
	// Changing the webhook keeps what was told; changing the limit starts
	// the thresholds again.
	want.WebhookURL = "http://127.0.0.1:9/other"
	if err := s.PutAccount(ctx, meter.Account{Owner: "alice", SpendingLimitUSD: 12.5, WebhookURL: want.WebhookURL, WebhookSecret: "s", Notified: 0}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Account(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("account after a webhook change (-want +got):\n%s", d)
	}
	want.SpendingLimitUSD, want.Notified = 20, 0
	if err := s.PutAccount(ctx, want); err != nil {
		t.Fatal(err)
	}
	if got, err = s.Account(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("account after a limit change (-want +got):\n%s", d)
	}
	mark(50, month, true)
	next := month.AddDate(0, 1, 0)
	mark(50, next, true) // a new month starts unannounced
	// Concurrent replicas: exactly one wins each threshold.
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if won, err := s.MarkNotified(ctx, "bob", month, 100); err == nil && won {
				wins.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := wins.Load(); n != 1 {
		t.Errorf("8 concurrent MarkNotified(100): %d won, want exactly 1", n)
	}
	if _, err := s.MarkNotified(ctx, "alice", month, 60); err == nil {
		t.Error("MarkNotified(60): no error")
	}
	for _, bad := range []meter.Account{{Owner: "alice", SpendingLimitUSD: -1}, {SpendingLimitUSD: 1}} {
		if err := s.PutAccount(ctx, bad); err == nil {
			t.Errorf("PutAccount(%+v): no error", bad)
		}
	}
}
