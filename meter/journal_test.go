package meter_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/thawhq/thaw/internal/bubbletest"
	"github.com/thawhq/thaw/internal/metertest"
	"github.com/thawhq/thaw/meter"
)

// TestDeployEvents runs the journal queries on each database.
func TestDeployEvents(t *testing.T) {
	runOnDatabases(t, "journal", []storeCase{{"deployment events", testDeployEvents}})
}

// ev is what the journal tests compare of an event.
type ev struct{ ID, Type, Message string }

func evs(es []meter.Event) []ev {
	out := []ev{}
	for _, e := range es {
		out = append(out, ev{e.ID, e.Type, e.Message})
	}
	return out
}

func testDeployEvents(t *testing.T, url string) {
	ctx := context.Background()
	s := open(t, url)
	t0 := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	id := func(i int) string { return meter.EventID(t0.Add(time.Duration(i) * time.Second)) }
	add := func(i int, owner, deploy, typ string) {
		t.Helper()
		e := meter.Event{Owner: owner, DeployID: deploy, At: t0.Add(time.Duration(i) * time.Second), Type: typ,
			Message: fmt.Sprintf("%s %d", typ, i), Detail: []byte(`{"n":1}`)}
		add := s.AddJournalEvent
		if typ == "deployment_idle" || typ == "spending_limit" { // the account's events
			add = s.AddEvent
		}
		if err := add(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	add(0, "alice", "d1", meter.EventDeploymentCreated)
	add(1, "alice", "d1", meter.EventScale)
	add(2, "alice", "d2", meter.EventScale)        // another deployment
	add(3, "bob", "d1", meter.EventInstancePlaced) // another owner's (cannot happen; still filtered)
	add(4, "alice", "d1", meter.EventInstancePlaced)
	add(5, "alice", "d1", "deployment_idle") // an account event about d1
	add(6, "alice", "", "spending_limit")
	if err := s.AddJournalEvent(ctx, meter.Event{Owner: "alice", Type: meter.EventScale, At: t0}); err == nil {
		t.Error("AddJournalEvent of an event of no deployment: no error")
	}

	got, err := s.DeployEvents(ctx, meter.EventQuery{Owner: "alice", DeployID: "d1", Since: t0, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	want := []ev{
		{id(0), meter.EventDeploymentCreated, "deployment.created 0"},
		{id(1), meter.EventScale, "scale 1"},
		{id(4), meter.EventInstancePlaced, "instance.placed 4"},
		{id(5), "deployment_idle", "deployment_idle 5"},
	}
	if d := cmp.Diff(want, evs(got)); d != "" {
		t.Errorf("d1's events (-want +got):\n%s", d)
	}
	if len(got) > 0 && (string(got[0].Detail) != `{"n":1}` || got[0].DeployID != "d1" || !got[0].At.Equal(t0)) {
		t.Errorf("first event = %+v, want detail, deployment and time as written", got[0])
	}
	// Since with a limit: the newest, oldest first.
	got, err = s.DeployEvents(ctx, meter.EventQuery{Owner: "alice", DeployID: "d1", Since: t0.Add(time.Second), Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want[2:], evs(got)); d != "" {
		t.Errorf("newest 2 since t0+1s (-want +got):\n%s", d)
	}
	// After a cursor with a limit: the oldest after it.
	after, err := meter.ParseEventID(id(0))
	if err != nil {
		t.Fatal(err)
	}
	got, err = s.DeployEvents(ctx, meter.EventQuery{Owner: "alice", DeployID: "d1", After: after, Since: t0.Add(time.Hour), Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want[1:3], evs(got)); d != "" {
		t.Errorf("first 2 after the first event (-want +got):\n%s", d)
	}
	// The account's own feed keeps its account events only.
	acct, err := s.Events(ctx, "alice", t0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]ev{{"", "deployment_idle", "deployment_idle 5"}, {"", "spending_limit", "spending_limit 6"}}, evs(acct)); d != "" {
		t.Errorf("account events (-want +got):\n%s", d)
	}
	// Retention deletes old journal events, never account events.
	n, err := s.PurgeEvents(ctx, t0.Add(4*time.Second+time.Microsecond))
	if err != nil || n != 5 {
		t.Fatalf("PurgeEvents = %d, %v; want 5 deleted", n, err)
	}
	got, err = s.DeployEvents(ctx, meter.EventQuery{Owner: "alice", DeployID: "d1", Since: t0, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want[3:], evs(got)); d != "" {
		t.Errorf("d1's events after the purge (-want +got):\n%s", d)
	}
}

func TestParseEventID(t *testing.T) {
	at := time.Date(2026, 3, 2, 10, 0, 0, 123456000, time.UTC)
	got, err := meter.ParseEventID(meter.EventID(at))
	if err != nil || !got.Equal(at) {
		t.Errorf("ParseEventID(EventID(%v)) = %v, %v", at, got, err)
	}
	for _, bad := range []string{"", "abc", "-5", "0", "1.5", "99999999999999999999"} {
		if _, err := meter.ParseEventID(bad); !errors.Is(err, meter.ErrBadEventID) {
			t.Errorf("ParseEventID(%q) = %v, want ErrBadEventID", bad, err)
		}
	}
}

// fakeJournalStore is the journal's database.
type fakeJournalStore struct{ metertest.Rows[meter.Event] }

func (f *fakeJournalStore) AddJournalEvent(_ context.Context, e meter.Event) error {
	return f.Add(e)
}

func (f *fakeJournalStore) PurgeEvents(_ context.Context, before time.Time) (int64, error) {
	return f.Purge(before)
}

// TestJournal: events are written in order, each dated strictly after the
// one before, retried while the database is down, and old ones purged at
// start and every hour.
func TestJournal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &fakeJournalStore{}
		j, err := meter.NewJournal(meter.JournalConfig{Store: store, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- j.Run(ctx) }()
		start := time.Now()

		t1 := start.Add(time.Second)
		j.Record(meter.Event{Owner: "alice", DeployID: "d1", Type: meter.EventScale, At: t1})
		j.Record(meter.Event{Owner: "alice", DeployID: "d1", Type: meter.EventInstancePlaced, At: t1})                     // a tie
		j.Record(meter.Event{Owner: "alice", DeployID: "d1", Type: meter.EventInstanceReady, At: t1.Add(-time.Minute)})    // earlier
		j.Record(meter.Event{Owner: "alice", DeployID: "d1", Type: meter.EventDeploymentUpdated, At: t1.Add(time.Second)}) // later
		j.Record(meter.Event{Owner: "alice", DeployID: "d1", Type: meter.EventDeploymentDeleted})                          // now
		bubbletest.Eventually(t, "5 events written", func() bool { a, _ := store.Snapshot(); return len(a) == 5 })
		added, purged := store.Snapshot()
		wantAt := []time.Time{t1, t1.Add(time.Microsecond), t1.Add(2 * time.Microsecond), t1.Add(time.Second), t1.Add(time.Second + time.Microsecond)}
		for i, e := range added {
			if !e.At.Equal(wantAt[i]) || e.ID != meter.EventID(wantAt[i]) {
				t.Errorf("event %d (%s) at %v id %s, want at %v", i, e.Type, e.At, e.ID, wantAt[i])
			}
		}
		if len(purged) != 1 || !purged[0].Equal(start.Add(-meter.DefaultEventRetention)) {
			t.Errorf("purged before %v at start, want one purge of events before %v", purged, start.Add(-meter.DefaultEventRetention))
		}

		store.SetFailing(true)
		j.Record(meter.Event{Owner: "alice", DeployID: "d1", Type: meter.EventScale, Message: "a"})
		j.Record(meter.Event{Owner: "alice", DeployID: "d1", Type: meter.EventScale, Message: "b"})
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if a, _ := store.Snapshot(); len(a) != 5 || j.Pending() != 2 {
			t.Fatalf("database down: %d written, %d pending; want 5 and 2", len(a), j.Pending())
		}
		store.SetFailing(false)
		bubbletest.Eventually(t, "the retried events written", func() bool { a, _ := store.Snapshot(); return len(a) == 7 })
		added, _ = store.Snapshot()
		if added[5].Message != "a" || added[6].Message != "b" {
			t.Errorf("retried events written as %q, %q; want a, b in order", added[5].Message, added[6].Message)
		}

		time.Sleep(time.Hour)
		synctest.Wait()
		if _, purged = store.Snapshot(); len(purged) != 2 {
			t.Errorf("%d purges after an hour, want 2", len(purged))
		}
		// A clean stop writes what is still queued.
		j.Record(meter.Event{Owner: "alice", DeployID: "d1", Type: meter.EventDeploymentDeleted, Message: "last"})
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run = %v", err)
		}
		if a, _ := store.Snapshot(); len(a) != 8 || a[7].Message != "last" {
			t.Errorf("after stop: %d events written, want the last one too", len(a))
		}
	})
}

// TestJournalFull: past MaxQueue, new events are dropped rather than
// growing memory without bound while the database is down.
func TestJournalFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &fakeJournalStore{}
		store.SetFailing(true)
		j, err := meter.NewJournal(meter.JournalConfig{Store: store, MaxQueue: 3, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 5 {
			j.Record(meter.Event{Owner: "alice", DeployID: "d1", Type: meter.EventScale, Message: fmt.Sprint(i)})
		}
		if j.Pending() != 3 {
			t.Errorf("pending = %d, want 3 (MaxQueue)", j.Pending())
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- j.Run(ctx) }()
		store.SetFailing(false)
		bubbletest.Eventually(t, "the queued events written", func() bool { a, _ := store.Snapshot(); return len(a) == 3 })
		cancel()
		<-done
		added, _ := store.Snapshot()
		if d := cmp.Diff([]string{"0", "1", "2"}, []string{added[0].Message, added[1].Message, added[2].Message}); d != "" {
			t.Errorf("written (-want +got):\n%s", d)
		}
	})
}
