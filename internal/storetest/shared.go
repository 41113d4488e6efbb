// Package storetest holds Shared, an in-memory deploy.SharedBackend for
// tests of what several stores (thaw server replicas) sharing one backend
// see: checked writes, name reservations and a watch, as Nomad Variables
// give them, with no Nomad.
package storetest

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/thawhq/thaw/deploy"
)

// Shared is an in-memory deploy.SharedBackend. Its index grows by one on
// every write, which gives the written record its version, as Nomad's Raft
// index does. Remote changes a record behind the stores' backs, as another
// replica would. The zero value is not ready: use New.
type Shared struct {
	// mu guards every field below.
	mu    sync.Mutex
	index uint64
	recs  map[string]deploy.Record
	names map[string]string // owner "/" lower-cased model_name -> deploy ID
	// changed is closed and replaced on every write, waking Watch.
	changed chan struct{}
	// watchErr, when set, is what Watch returns.
	watchErr error
}

var _ deploy.SharedBackend = (*Shared)(nil)

// New returns an empty Shared.
func New() *Shared {
	return &Shared{recs: map[string]deploy.Record{}, names: map[string]string{}, changed: make(chan struct{})}
}

func nameKey(d deploy.Deployment) string { return d.Owner + "/" + strings.ToLower(d.ModelName) }

// bumpLocked moves the index on and wakes the watchers; it returns the new
// index. Called with mu held.
func (s *Shared) bumpLocked() uint64 {
	s.index++
	close(s.changed)
	s.changed = make(chan struct{})
	return s.index
}

// Load returns every record.
func (s *Shared) Load() ([]deploy.Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]deploy.Record, 0, len(s.recs))
	for _, r := range s.recs {
		out = append(out, r)
	}
	return out, nil
}

// Read returns the record with id.
func (s *Shared) Read(id string) (deploy.Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.recs[id]
	if !ok {
		return deploy.Record{}, fmt.Errorf("read %s: %w", id, deploy.ErrNotFound)
	}
	return r, nil
}

// Create reserves d's name and writes d.
func (s *Shared) Create(d deploy.Deployment) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.names[nameKey(d)]; ok {
		return 0, fmt.Errorf("name %s: %w", nameKey(d), deploy.ErrDuplicate)
	}
	if _, ok := s.recs[d.ID]; ok {
		return 0, fmt.Errorf("create %s: %w", d.ID, deploy.ErrConflict)
	}
	s.names[nameKey(d)] = d.ID
	v := s.bumpLocked()
	s.recs[d.ID] = deploy.Record{Deployment: d, Version: v}
	return v, nil
}

// Update writes d if its version is still version.
func (s *Shared) Update(d deploy.Deployment, version uint64) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.recs[d.ID]; !ok || r.Version != version {
		return 0, fmt.Errorf("update %s at %d: %w", d.ID, version, deploy.ErrConflict)
	}
	v := s.bumpLocked()
	s.recs[d.ID] = deploy.Record{Deployment: d, Version: v}
	return v, nil
}

// Delete removes d if its version is still version, and its name.
func (s *Shared) Delete(d deploy.Deployment, version uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.recs[d.ID]; !ok || r.Version != version {
		return fmt.Errorf("delete %s at %d: %w", d.ID, version, deploy.ErrConflict)
	}
	delete(s.recs, d.ID)
	delete(s.names, nameKey(d))
	s.bumpLocked()
	return nil
}

// Watch returns the versions once the index differs from index.
func (s *Shared) Watch(ctx context.Context, index uint64) (map[string]uint64, uint64, error) {
	for {
		s.mu.Lock()
		if s.watchErr != nil {
			err := s.watchErr
			s.mu.Unlock()
			return nil, 0, err
		}
		if s.index != index {
			out := make(map[string]uint64, len(s.recs))
			for id, r := range s.recs {
				out[id] = r.Version
			}
			defer s.mu.Unlock()
			return out, s.index, nil
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-ch:
		}
	}
}

// Remote applies fn to the record with id as another replica would: its
// version moves on, and no store is told but through Watch. It reports
// whether the record exists.
func (s *Shared) Remote(id string, fn func(*deploy.Deployment)) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.recs[id]
	if !ok {
		return false
	}
	fn(&r.Deployment)
	r.Version = s.bumpLocked()
	s.recs[id] = r
	return true
}

// RemoteDelete deletes the record with id as another replica would.
func (s *Shared) RemoteDelete(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.recs[id]; ok {
		delete(s.recs, id)
		delete(s.names, nameKey(r.Deployment))
		s.bumpLocked()
	}
}

// RemoteCreate stores d (with its ID) as another replica would.
func (s *Shared) RemoteCreate(d deploy.Deployment) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.names[nameKey(d)] = d.ID
	s.recs[d.ID] = deploy.Record{Deployment: d, Version: s.bumpLocked()}
}

// FailWatch makes Watch return err (nil: work again).
func (s *Shared) FailWatch(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.watchErr = err
}
