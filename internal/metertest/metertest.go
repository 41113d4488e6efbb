// Package metertest opens what the usage tests of several packages start
// from: a deploy store and a SQLite usage ledger in the test's temporary
// directory, closed when the test ends.
package metertest

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/thawhq/thaw/deploy"
	"github.com/thawhq/thaw/meter"
	_ "github.com/thawhq/thaw/meter/drivers" // the ledger's SQLite and PostgreSQL
)

// Open returns an empty deploy store and ledger.
func Open(t testing.TB) (*deploy.Store, *meter.Store) {
	t.Helper()
	dir := t.TempDir()
	store, err := deploy.OpenStore(filepath.Join(dir, "deployments.json"))
	if err != nil {
		t.Fatal(err)
	}
	ledger, err := meter.Open(context.Background(), "sqlite:"+filepath.Join(dir, "usage.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ledger.Close() })
	return store, ledger
}
