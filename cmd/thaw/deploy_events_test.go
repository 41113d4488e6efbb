package main

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/thawhq/thaw/api"
	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/internal/metertest"
	"github.com/thawhq/thaw/meter"
	"github.com/thawhq/thaw/test/e2e"
)

// ledgerJournal records events in the ledger at once.
type ledgerJournal struct{ *meter.Store }

func (j ledgerJournal) Record(e meter.Event) { _ = j.AddJournalEvent(context.Background(), e) }

// startJournalAPI serves the deploy API with a journal over a SQLite
// ledger, for user "dev" whose deployment "llama" it returns, and points
// THAW_ADDR and THAW_TOKEN at it. add records an event of llama.
func startJournalAPI(t *testing.T) (d deploy.Deployment, add func(msg string)) {
	t.Helper()
	store, ledger := metertest.Open(t)
	serveAPI(t, api.Config{Store: store, Live: &meteredServer{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Journal: ledgerJournal{ledger}})
	d, err := store.Create(deploy.Deployment{Owner: "dev", ModelName: "llama",
		Config: deploy.Config{GPU: "A100-80GB", NumGPUs: 1, MaxBatchSize: 8}, Settings: deploy.Settings{MaxInstances: 1}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Now().Add(-time.Hour).Truncate(time.Second)
	return d, func(msg string) {
		at = at.Add(time.Minute)
		if err := ledger.AddJournalEvent(context.Background(), meter.Event{Owner: "dev", DeployID: d.ID, At: at, Type: meter.EventScale, Message: msg}); err != nil {
			t.Error(err)
		}
	}
}

func TestDeployEventsCommand(t *testing.T) {
	d, add := startJournalAPI(t)
	out, err := thaw(t, "deploy", "events", "llama")
	if err != nil || strings.TrimSpace(out) != "no events" {
		t.Errorf("no events yet: %q, %v", out, err)
	}
	add("scaled 0 -> 1: wake")
	add("scaled 1 -> 0: idle")
	out, err = thaw(t, "deploy", "events", "dev/llama")
	if err != nil {
		t.Fatal(err)
	}
	// One deployment's events: no DEPLOY_ID column, oldest first.
	if header := strings.Fields(strings.SplitN(out, "\n", 2)[0]); !slices.Equal(header, []string{"AT", "TYPE", "MESSAGE"}) {
		t.Errorf("events table header %q, want AT TYPE MESSAGE", header)
	}
	var got []string
	for _, r := range table(t, out) {
		got = append(got, r["TYPE"]+": "+r["MESSAGE"])
	}
	if want := []string{"scale: scaled 0 -> 1: wake", "scale: scaled 1 -> 0: idle"}; !slices.Equal(got, want) {
		t.Errorf("events table rows %q, want %q\n%s", got, want, out)
	}
	out, err = thaw(t, "deploy", "events", d.ID, "--limit", "1", "--json")
	if err != nil || !strings.Contains(out, `"type": "scale"`) || !strings.Contains(out, "idle") || strings.Contains(out, "wake") {
		t.Errorf("--limit 1 --json: %s (%v)", out, err)
	}
	if _, err := thaw(t, "deploy", "events", "llama", "--limit", "5000"); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("--limit 5000: %v, want the server's refusal", err)
	}
	if _, err := thaw(t, "deploy", "events", "nope"); err == nil {
		t.Error("an unknown deployment: no error")
	}
}

func TestDeployEventsFollow(t *testing.T) {
	_, add := startJournalAPI(t)
	add("first")
	var out e2e.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runMain(ctx, []string{"deploy", "events", "llama", "--follow"}, &out, io.Discard) }()
	if !e2e.Eventually(5*time.Second, 10*time.Millisecond, func() bool { return strings.Contains(out.String(), "first") }) {
		t.Fatalf("followed: %q, want the first event", out.String())
	}
	add("second")
	if !e2e.Eventually(5*time.Second, 10*time.Millisecond, func() bool { return strings.Contains(out.String(), "second") }) {
		t.Fatalf("followed: %q, want the new event", out.String())
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("--follow interrupted: %v, want nil", err)
	}
	if n := strings.Count(out.String(), "\n"); n != 2 {
		t.Errorf("followed %d lines, want 2:\n%s", n, out.String())
	}
}
