// Package meter is thaw's GPU-time ledger: what each deployment's
// instances held, for how long, what that costs, and the weekly statements
// and spending limits built on it.
//
// # The ledger
//
// The ledger is append-only. Each row is a Fact about one instance, taken
// from the runtime's own record (the local runtime's process start and
// exit, Nomad's allocation times), never from when thaw happened to notice:
//
//   - held: the instance's GPUs were taken (allocation placed, process
//     started). Time counts from here, loading weights included.
//   - ready: its model server became ready. Time before it is loading time,
//     reported apart from serving time but billed all the same (the GPU is
//     held).
//   - released: its GPUs were freed, with how it ended ("stopped",
//     "failed: ...", "start timeout: ...").
//
// An Interval is one instance's facts folded together: Start (held), Ready
// and End (released), the latter two zero while not yet known. Summarize and
// Statements are pure functions of intervals, a window and now: an interval
// still open is counted up to now.
//
// # Idempotence across restarts
//
// A fact is keyed by (instance, kind) and the first one recorded wins: a
// runtime that re-reports its instances after a thaw restart or a leader
// change adds nothing, and two replicas recording the same fact at once
// insert one row (a unique key and ON CONFLICT DO NOTHING, in both
// databases). Because the times are the runtime's, an instance that ran
// across a restart is counted once, with no gap and no overlap; one whose
// end was missed while thaw was down is closed later (OpenIntervals lists
// the candidates) with the time the runtime kept, not a guess. A ready or
// released fact for an instance with no held fact is refused (ErrNoHeld):
// the ledger never holds an end without a start.
//
// # Storage
//
// Store is database/sql over SQLite (modernc.org/sqlite, pure Go: thaw dev's
// embedded default) or PostgreSQL (pgx's database/sql driver: thaw server),
// with one code path: the SQL is the same, "?" placeholders are rewritten to
// "$n" for PostgreSQL, and the migration lock is the only dialect-specific
// statement. Times are integer Unix microseconds (portable and exact); the
// schema is versioned (schema_migrations), its steps embedded in the binary
// (migrations/NNNN_name.sql) and applied in one transaction at Open.
package meter
