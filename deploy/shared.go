package deploy

import (
	"context"
	"errors"
	"sort"
	"time"
)

// Record is a deployment as a SharedBackend holds it.
type Record struct {
	Deployment Deployment
	// Version is the backend's version of the record (Nomad's
	// ModifyIndex): every write makes it greater, and a checked write names
	// the version it changes.
	Version uint64
}

// SharedBackend persists deployment records that several stores, one per
// thaw server replica, write at once. Each write is checked against the
// version the writer last read, so that a race is refused, never lost; Watch
// lets each store follow the others' writes.
type SharedBackend interface {
	// Load returns every record.
	Load() ([]Record, error)
	// Read returns the record with id, or an error wrapping ErrNotFound.
	Read(id string) (Record, error)
	// Create writes d, which must not exist yet, and reserves its owner's
	// model_name regardless of case: an error wrapping ErrDuplicate when
	// another deployment holds the name. It returns d's version.
	Create(d Deployment) (uint64, error)
	// Update writes d if its stored version is still version, else returns
	// an error wrapping ErrConflict. It returns d's new version.
	Update(d Deployment, version uint64) (uint64, error)
	// Delete removes d if its stored version is still version (else an
	// error wrapping ErrConflict) and releases its model_name.
	Delete(d Deployment, version uint64) error
	// Watch blocks until the records change after the state at index (0:
	// at once), ctx ends, or the backend's own wait runs out, and returns
	// the version of each record by ID with the index of that state. A
	// record written at or before that index and missing from versions has
	// been deleted.
	Watch(ctx context.Context, index uint64) (versions map[string]uint64, next uint64, err error)
}

// Retry delays of Run after a failed watch.
const (
	followRetryMin = time.Second
	followRetryMax = 30 * time.Second
)

// Run follows the changes other stores make to a SharedBackend: each shows
// here (Get, List, a signal to every subscriber) as soon as the backend's
// watch returns (for Nomad, within a round trip or two). A failed watch is
// logged and retried, backing off from 1 s to 30 s. Run returns nil when ctx
// ends, or at once over a Backend, whose only writer is this store.
func (s *Store) Run(ctx context.Context) error {
	if s.watch == nil {
		return nil
	}
	var index uint64
	var backoff time.Duration
	for {
		err := s.follow(ctx, &index)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			backoff = 0
			continue
		}
		backoff = min(max(2*backoff, followRetryMin), followRetryMax)
		s.log.Warn("follow the deployment store: retrying", "err", err, "in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// follow waits for the backend to change after *index, reads the records
// that changed and applies what it found, then moves *index on.
func (s *Store) follow(ctx context.Context, index *uint64) error {
	versions, next, err := s.watch.Watch(ctx, *index)
	if err != nil {
		return err
	}
	if err := s.apply(versions, next); err != nil {
		return err
	}
	if next < *index {
		next = 0 // the backend's history restarted: take its state afresh
	}
	*index = next
	return nil
}

// Bounds of syncOnMiss.
const (
	// missSyncTimeout bounds the backend read a lookup waits for.
	missSyncTimeout = 2 * time.Second
	// missSyncGap is the least time between two reads started by misses,
	// so lookups of names nobody has (a client's typo, a scan) cannot
	// turn into a read of Nomad each.
	missSyncGap = 100 * time.Millisecond
)

// syncOnMiss reads the backend's whole state at once, after a Fetch
// missed, and reports whether it did: a deployment another replica
// created a moment ago is then found at once, not when the watch next
// returns (a create answered by one replica and used through another a
// few milliseconds later got 404). Concurrent misses share one read, and
// reads start at most every missSyncGap; a plain store (one writer) never
// misses what exists.
func (s *Store) syncOnMiss() bool {
	if s.watch == nil {
		return false
	}
	synced, err, _ := s.misses.Do("sync", func() (any, error) {
		s.missMu.Lock()
		if time.Since(s.lastMiss) < missSyncGap {
			s.missMu.Unlock()
			return false, nil
		}
		s.lastMiss = time.Now()
		s.missMu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), missSyncTimeout)
		defer cancel()
		versions, next, err := s.watch.Watch(ctx, 0)
		if err != nil {
			return false, err
		}
		return true, s.apply(versions, next)
	})
	if err != nil {
		s.log.Warn("deployment store: read after a miss failed", "err", err)
		return false
	}
	return synced.(bool)
}

// apply reads the records newer than the store's among versions (the
// backend's state at index next) and applies them, signalling readers on
// a change.
func (s *Store) apply(versions map[string]uint64, next uint64) error {
	s.mu.Lock()
	stale := staleIDs(s.ver, s.tomb, versions)
	s.mu.Unlock()
	recs := make(map[string]Record, len(stale))
	for _, id := range stale {
		r, err := s.watch.Read(id)
		if errors.Is(err, ErrNotFound) {
			continue // deleted since the watch: the next one says so
		}
		if err != nil {
			return err
		}
		recs[id] = r
	}
	s.mu.Lock()
	if s.applyLocked(recs, versions, next) {
		s.signal()
	}
	s.mu.Unlock()
	return nil
}

// staleIDs returns, sorted, the IDs in remote (versions by ID) newer than
// the store's own version in known and than its delete in tomb.
func staleIDs(known, tomb, remote map[string]uint64) []string {
	var out []string
	for id, v := range remote {
		if v > known[id] && v > tomb[id] {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// applyLocked takes the records read after a watch (newer ones only: a
// write of this store's since the watch is kept) and drops the deployments
// the watch's state at index at lacks, if written at or before it; it
// forgets the deletes that state shows. It reports whether anything
// changed. Called with mu held.
func (s *Store) applyLocked(recs map[string]Record, versions map[string]uint64, at uint64) bool {
	changed := false
	for id, r := range recs {
		if r.Version <= s.ver[id] || r.Version <= s.tomb[id] {
			continue
		}
		r.Deployment.ID = id
		s.byID[id], s.ver[id] = r.Deployment, r.Version
		changed = true
	}
	for id, v := range s.ver {
		if _, ok := versions[id]; !ok && v <= at {
			delete(s.byID, id)
			delete(s.ver, id)
			changed = true
		}
	}
	for id := range s.tomb {
		if _, ok := versions[id]; !ok {
			delete(s.tomb, id)
		}
	}
	return changed
}

// versioned is the store's view of its backend: a Backend (plain) or a
// SharedBackend (shared). The whole set after the change, all, is for a
// Backend that rewrites everything.
type versioned interface {
	load() ([]Record, error)
	read(id string) (Record, error)
	create(all []Deployment, d Deployment) (uint64, error)
	update(all []Deployment, d Deployment, version uint64) (uint64, error)
	remove(all []Deployment, d Deployment, version uint64) error
}

// plain is a one-writer Backend: every version is 0 and nothing conflicts.
type plain struct{ b Backend }

func (p plain) load() ([]Record, error) {
	ds, err := p.b.Load()
	if err != nil {
		return nil, err
	}
	out := make([]Record, len(ds))
	for i, d := range ds {
		out[i] = Record{Deployment: d}
	}
	return out, nil
}

// read is never called: only ErrConflict, which a Backend never returns,
// makes the store read one record again.
func (p plain) read(string) (Record, error) { return Record{}, ErrNotFound }

func (p plain) create(all []Deployment, d Deployment) (uint64, error) { return 0, p.b.Put(all, d) }

func (p plain) update(all []Deployment, d Deployment, _ uint64) (uint64, error) {
	return 0, p.b.Put(all, d)
}

func (p plain) remove(all []Deployment, d Deployment, _ uint64) error { return p.b.Delete(all, d.ID) }

// shared is a SharedBackend, which needs no whole set.
type shared struct{ b SharedBackend }

func (s shared) load() ([]Record, error)                             { return s.b.Load() }
func (s shared) read(id string) (Record, error)                      { return s.b.Read(id) }
func (s shared) create(_ []Deployment, d Deployment) (uint64, error) { return s.b.Create(d) }
func (s shared) update(_ []Deployment, d Deployment, v uint64) (uint64, error) {
	return s.b.Update(d, v)
}
func (s shared) remove(_ []Deployment, d Deployment, v uint64) error { return s.b.Delete(d, v) }
