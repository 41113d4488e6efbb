package metertest

import (
	"errors"
	"sync"
	"time"
)

// ErrDown is what a Rows set failing returns: the database is down.
var ErrDown = errors.New("database down")

// Rows is a fake of the database behind a meter queue (the journal's
// events, the stats sampler's samples): it records the rows added and
// each purge's cutoff, and refuses additions while failing. Safe for
// concurrent use; its zero value is ready.
type Rows[T any] struct {
	mu      sync.Mutex // mu guards all below.
	added   []T
	purged  []time.Time
	failing bool
}

// Add records rows, or returns ErrDown while failing.
func (r *Rows[T]) Add(rows ...T) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failing {
		return ErrDown
	}
	r.added = append(r.added, rows...)
	return nil
}

// Purge records a purge of the rows before cutoff; it deletes nothing.
func (r *Rows[T]) Purge(before time.Time) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.purged = append(r.purged, before)
	return 0, nil
}

// SetFailing makes Add fail (true) or succeed again (false).
func (r *Rows[T]) SetFailing(v bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failing = v
}

// Snapshot returns copies of the rows added and the purge cutoffs so far.
func (r *Rows[T]) Snapshot() ([]T, []time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]T(nil), r.added...), append([]time.Time(nil), r.purged...)
}

// Take returns the rows added and the purge cutoffs since the last Take
// and forgets them.
func (r *Rows[T]) Take() ([]T, []time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a, p := r.added, r.purged
	r.added, r.purged = nil, nil
	return a, p
}
