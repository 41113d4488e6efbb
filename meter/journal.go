package meter

// A deployment's journal: what happened to it (created, scaled, instances
// placed, ready, stopped, failed), kept in the events table next to the
// account events, read by deployment (GET /deploy/{id}/events).

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Journal event types: what the deployment's owner sees in its events feed.
// The values are a public contract (GET /deploy/{id}/events).
const (
	EventDeploymentCreated = "deployment.created"
	EventDeploymentUpdated = "deployment.updated"
	EventDeploymentDeleted = "deployment.deleted"
	// EventDeploymentFailed: its instances kept failing before they got
	// ready; no more start until it is updated.
	EventDeploymentFailed = "deployment.failed"
	// EventScale: the autoscaler changed the desired count.
	EventScale = "scale"
	// EventInstancePlaced: the runtime placed an instance and took its GPUs.
	EventInstancePlaced = "instance.placed"
	// EventInstancePending: instances are wanted but not placed, and why
	// (the GPU quota, no free capacity); recorded when the reason changes.
	EventInstancePending = "instance.pending"
	// EventInstanceReady: an instance serves; detail has the cold start.
	EventInstanceReady = "instance.ready"
	// EventInstanceStopped: an instance ended without failing (scaled
	// down, deleted, start timeout) and freed its GPUs.
	EventInstanceStopped = "instance.stopped"
	// EventInstanceFailed: an instance failed (the model server exited,
	// the runtime could not start it).
	EventInstanceFailed = "instance.failed"
)

// DefaultEventRetention is how long journal events are kept: older ones
// are deleted (Journal.Run, once an hour).
const DefaultEventRetention = 30 * 24 * time.Hour

// ErrBadEventID is returned by ParseEventID for a string that is not an
// event's ID.
var ErrBadEventID = errors.New("meter: not an event id")

// EventID is the ID of the event recorded at at: a cursor, ordered as the
// events are.
func EventID(at time.Time) string { return strconv.FormatInt(us(at), 10) }

// ParseEventID returns the time of the event whose ID is s.
func ParseEventID(s string) (time.Time, error) {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v <= 0 {
		return time.Time{}, fmt.Errorf("%w: %q", ErrBadEventID, s)
	}
	return fromUS(v), nil
}

// EventQuery selects a deployment's events.
type EventQuery struct {
	Owner, DeployID string
	// After, when not zero, is a cursor (ParseEventID): the events after
	// it, the oldest Limit of them. Else Since applies.
	After time.Time
	// Since: the events at or after it, the newest Limit of them.
	Since time.Time
	// Limit is the most events returned; it must be above 0.
	Limit int
}

// DeployEvents returns the events of q's deployment and owner, journal and
// account events alike, oldest first, with their IDs set.
func (s *Store) DeployEvents(ctx context.Context, q EventQuery) ([]Event, error) {
	if q.Limit <= 0 {
		return nil, fmt.Errorf("meter: events of %s: limit %d", q.DeployID, q.Limit)
	}
	query := `SELECT at_us, type, message, detail FROM events
		WHERE deploy_id = ? AND owner = ? AND at_us >= ? ORDER BY at_us DESC LIMIT ?`
	from := us(q.Since)
	newest := true
	if !q.After.IsZero() {
		query = `SELECT at_us, type, message, detail FROM events
			WHERE deploy_id = ? AND owner = ? AND at_us > ? ORDER BY at_us LIMIT ?`
		from, newest = us(q.After), false
	}
	out, err := queryRows(ctx, s, "events of "+q.DeployID, func(rows *sql.Rows) (Event, error) {
		e := Event{Owner: q.Owner, DeployID: q.DeployID}
		var at int64
		var detail string
		err := rows.Scan(&at, &e.Type, &e.Message, &detail)
		e.At, e.ID, e.Detail = fromUS(at), strconv.FormatInt(at, 10), storedDetail(detail)
		return e, err
	}, query, q.DeployID, q.Owner, from, q.Limit)
	if err != nil {
		return nil, err
	}
	if newest {
		slices.Reverse(out)
	}
	return out, nil
}

// AddJournalEvent appends e to its deployment's journal.
func (s *Store) AddJournalEvent(ctx context.Context, e Event) error {
	if e.DeployID == "" || e.Owner == "" {
		return fmt.Errorf("meter: journal event %s: no deployment or owner", e.Type)
	}
	detail := string(e.Detail)
	if detail == "" {
		detail = "null"
	}
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO events (owner, at_us, type, deploy_id, message, detail, journal)
		VALUES (?, ?, ?, ?, ?, ?, 1)`), e.Owner, us(e.At), e.Type, e.DeployID, e.Message, detail)
	if err != nil {
		return fmt.Errorf("meter: journal event of %s: %w", e.DeployID, err)
	}
	return nil
}

// PurgeEvents deletes the journal events dated before before (account
// events stay) and returns how many it deleted.
func (s *Store) PurgeEvents(ctx context.Context, before time.Time) (int64, error) {
	return s.deleteRows(ctx, "purge events", `DELETE FROM events WHERE journal = 1 AND at_us < ?`, us(before))
}

// JournalStore is where a Journal writes: the Store.
type JournalStore interface {
	AddJournalEvent(ctx context.Context, e Event) error
	PurgeEvents(ctx context.Context, before time.Time) (int64, error)
}

// JournalConfig configures a Journal. Store is required.
type JournalConfig struct {
	Store JournalStore
	// Retention is how long events are kept. Default DefaultEventRetention.
	Retention time.Duration
	// PurgeEvery is how often older events are deleted. Default 1h; the
	// first purge runs at start.
	PurgeEvery time.Duration
	// MaxQueue bounds the events waiting to be written while the database
	// is down; past it new events are dropped (and logged). Default 10000.
	MaxQueue int
	// Now defaults to time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Journal records deployments' events off the caller's path, in the order
// they were recorded: Record never blocks, and an event the database could
// not take is retried, in order, until it can.
//
// Each event recorded by one Journal is dated strictly after the one
// before it (a tie, or an earlier time, is moved to 1 µs after it), so
// that an event's time is a total cursor: a reader that polls for the
// events after the last one it saw misses none that this process wrote.
type Journal struct {
	cfg JournalConfig
	log *slog.Logger
	q   *queue[Event]

	// mu guards last and dropped, and is held while an event is pushed so
	// that the queue is in the order of the events' times.
	mu      sync.Mutex
	last    int64 // at_us of the last event recorded
	dropped int
}

// NewJournal returns a Journal; Run starts it.
func NewJournal(cfg JournalConfig) (*Journal, error) {
	if cfg.Store == nil {
		return nil, errors.New("meter: Journal needs a Store")
	}
	if cfg.Retention <= 0 {
		cfg.Retention = DefaultEventRetention
	}
	if cfg.PurgeEvery <= 0 {
		cfg.PurgeEvery = time.Hour
	}
	if cfg.MaxQueue <= 0 {
		cfg.MaxQueue = 10000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Journal{cfg: cfg, log: cfg.Logger, q: newQueue[Event]()}, nil
}

// Record queues e, dated e.At (now when zero) or 1 µs after the event
// recorded before it, whichever is later. It never blocks.
func (j *Journal) Record(e Event) {
	at := e.At
	if at.IsZero() {
		at = j.cfg.Now()
	}
	j.mu.Lock()
	v := max(us(at), j.last+1)
	j.last = v
	e.At = fromUS(v)
	e.ID = strconv.FormatInt(v, 10)
	if !j.q.push(e, j.cfg.MaxQueue) {
		j.dropped++
	}
	j.mu.Unlock()
}

// Pending is how many events wait to be written.
func (j *Journal) Pending() int { return j.q.len() }

// Run writes queued events until ctx is done, and deletes the events older
// than Retention every PurgeEvery. Events still queued when ctx ends are
// written with a short grace.
func (j *Journal) Run(ctx context.Context) error {
	return j.q.run(ctx, j.cfg.PurgeEvery, nil, j.drain, j.purge)
}

// drain writes the queue in order. An event the database could not take
// stays at the head and is retried after a pause.
func (j *Journal) drain(ctx context.Context) {
	j.q.drain(ctx, j.write)
}

// write adds e to the store (an error means "retry it"), after logging the
// events dropped since the last write, if any.
func (j *Journal) write(ctx context.Context, e Event) error {
	j.mu.Lock()
	n := j.dropped
	j.dropped = 0
	j.mu.Unlock()
	if n > 0 {
		j.log.Error("events journal full: events dropped", "dropped", n, "max_queue", j.cfg.MaxQueue)
	}
	err := j.cfg.Store.AddJournalEvent(ctx, e)
	if err != nil {
		j.log.Warn("events journal: database unavailable; will retry", "type", e.Type, "deploy", e.DeployID, "pending", j.Pending(), "err", err)
	}
	return err
}

// purge deletes the events older than Retention.
func (j *Journal) purge(ctx context.Context) {
	n, err := j.cfg.Store.PurgeEvents(ctx, j.cfg.Now().Add(-j.cfg.Retention))
	switch {
	case err != nil && ctx.Err() == nil:
		j.log.Warn("events journal: purge failed", "err", err)
	case n > 0:
		j.log.Info("events journal: deleted old events", "deleted", n, "retention", j.cfg.Retention)
	}
}
